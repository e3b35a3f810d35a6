-- wrk script: POST one fixed body, read from the file named by BENCH_BODY_FILE, with the content type in
-- BENCH_CONTENT_TYPE. The harness writes the bodies (benchmarks/bodies.py) so every target gets the same bytes.
-- done() prints one machine-readable line so the harness needs no parsing of wrk's human output.

local path = os.getenv("BENCH_BODY_FILE")
if path == nil then
  error("BENCH_BODY_FILE is not set")
end
local file = assert(io.open(path, "rb"))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    "BENCH_RESULT {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, \"connect_errors\": %d, " ..
    "\"read_errors\": %d, \"write_errors\": %d, \"status_errors\": %d, \"timeouts\": %d, " ..
    "\"p50_us\": %d, \"p90_us\": %d, \"p99_us\": %d, \"max_us\": %d, \"mean_us\": %.1f}\n",
    summary.requests, summary.duration, summary.bytes, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
