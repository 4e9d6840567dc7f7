-- The POST row: every request is a POST with the same 1 KiB JSON body (scenarios.POST_BODY).
wrk.method = "POST"
wrk.body = '{"data":"' .. string.rep("x", 1013) .. '"}'
wrk.headers["Content-Type"] = "application/json"
