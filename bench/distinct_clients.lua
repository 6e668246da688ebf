-- wrk script for bench/memory.py: every request comes from a different client address, given
-- in X-Forwarded-For (the benchmark's Envoy trusts one hop). Arguments after `--`:
-- START TOTAL THREADS. Thread t sends addresses START+t, START+t+THREADS, ... and stops after
-- its share of TOTAL responses; requests still in flight then reuse START, so exactly TOTAL
-- distinct addresses are sent. The addresses are only header values: all traffic is loopback.

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  first = tonumber(args[1])
  total = tonumber(args[2])
  nthreads = tonumber(args[3])
  quota = math.floor(total / nthreads)
  if tid < total % nthreads then
    quota = quota + 1
  end
  n = first + tid
  answered = 0
  not_ok = 0
end

local function address(i)
  return string.format("10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
end

function request()
  local i = n
  n = n + nthreads
  if i >= first + total then
    i = first
  end
  return wrk.format(nil, nil, { ["X-Forwarded-For"] = address(i) })
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then
    not_ok = not_ok + 1
  end
  if answered >= quota then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local answers, bad = 0, 0
  for _, t in ipairs(threads) do
    answers = answers + t:get("answered")
    bad = bad + t:get("not_ok")
  end
  io.write(string.format("DISTINCT answered=%d non200=%d\n", answers, bad))
end
