-- The many-users row: each request carries the next of the users' tokens (one per line in the file
-- named by bench_tokens_file, which the harness sets above this script), cycling through them all,
-- so no two requests in a row are the same user's; each token names its user's own device.
local tokens = {}
for line in io.lines(bench_tokens_file) do
  if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
end
if #tokens == 0 then error("no tokens in " .. bench_tokens_file) end
local next_token = 0
local headers = {}
request = function()
  next_token = next_token % #tokens + 1
  headers["Authorization"] = tokens[next_token]
  return wrk.format(nil, nil, headers)
end
