-- wrk script: a GET of the URL's path (the nginx yardstick of the model
-- list rows: a static file holding the gateway's answer, byte for byte).
wrk.method = "GET"
