-- wrk script: a stored Response's input items (GET
-- /v1/responses/{id}/input_items); run.sh stores one first and passes its
-- id in MF_RESP_ID.
wrk.method = "GET"
wrk.path = "/v1/responses/" .. os.getenv("MF_RESP_ID") .. "/input_items?limit=20"
