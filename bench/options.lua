-- make bench's preflight variants: wrk sends OPTIONS (the headers come from -H).
wrk.method = "OPTIONS"
