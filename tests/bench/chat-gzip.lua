-- wrk script: the plain chat completion of chat.lua with its body sent
-- gzip'd (Content-Encoding: gzip); the file MF_GZIP_BODY holds the
-- compressed bytes (xlate.sh writes it).
local f = assert(io.open(os.getenv("MF_GZIP_BODY"), "rb"))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Content-Encoding"] = "gzip"
wrk.body = f:read("*a")
f:close()
