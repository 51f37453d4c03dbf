-- wrk script for POST /ingest: bodies of N JSON lines (N from the LINES environment variable,
-- default 100), counts 202 and 429 answers, and paces each connection with DELAY_MS (0: as
-- fast as answered) to hold a rate below the maximum.
local lines = tonumber(os.getenv("LINES") or "100")
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")
local parts = {}
for i = 1, lines do
  parts[i] = string.format('{"timestamp":%d,"auction":%d,"bidder":%d,"price":%d}', 1700000000000 + i, i % 97, i % 1013, i * 7)
end
wrk.method = "POST"
wrk.body = table.concat(parts, "\n") .. "\n"
wrk.headers["Content-Type"] = "application/x-ndjson"

local accepted, refused, other = 0, 0, 0
function delay() return delay_ms end
function response(status, headers, body)
  if status == 202 then accepted = accepted + 1
  elseif status == 429 then refused = refused + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  -- Per-thread counters are not visible here; the processor's metrics give the totals.
  io.write(string.format("latency_p50_ms %.3f\nlatency_p99_ms %.3f\nrequests %d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests))
end
