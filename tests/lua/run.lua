-- A small busted-style runner for the Lua helper library (lua/mf), run
-- under the luajit binary from the repository root:
--   luajit tests/lua/run.lua [tests/lua/FILE_spec.lua ...]
-- The host's C part of mf (mf.json, mf.shared, mf.req, mf.redis) is
-- replaced by the fakes of fake_mf.lua; the library files are the real
-- ones. describe/it/before_each and assert.* as in busted.
package.path = "lua/?.lua;tests/lua/?.lua;" .. package.path

local fake = require "fake_mf"
package.preload["mf"] = function() return fake.mf end

local results = { passed = 0, failed = 0, errors = {} }
local stack, befores = {}, {}

local function fmt(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "table" then
    local ok, s = pcall(fake.mf.json.encode, v)
    if ok and s then return s end
  end
  return tostring(v)
end

local function deep_eq(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do if not deep_eq(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function fail(msg) error({ assertion = msg }, 3) end

assert = setmetatable({
  equal = function(want, got, msg)
    if want ~= got then fail((msg and msg .. ": " or "") .. "expected " .. fmt(want) .. ", got " .. fmt(got)) end
  end,
  same = function(want, got, msg)
    if not deep_eq(want, got) then fail((msg and msg .. ": " or "") .. "expected " .. fmt(want) .. ", got " .. fmt(got)) end
  end,
  near = function(want, got, eps, msg)
    if type(got) ~= "number" or math.abs(want - got) > eps then
      fail((msg and msg .. ": " or "") .. "expected " .. fmt(want) .. " +- " .. eps .. ", got " .. fmt(got))
    end
  end,
  truthy = function(v, msg) if not v then fail(msg or ("expected a true value, got " .. fmt(v))) end end,
  falsy = function(v, msg) if v then fail(msg or ("expected a false value, got " .. fmt(v))) end end,
  is_nil = function(v, msg) if v ~= nil then fail(msg or ("expected nil, got " .. fmt(v))) end end,
  has_error = function(f, pattern)
    local ok, err = pcall(f)
    if ok then fail("expected an error") end
    if pattern and not tostring(err):find(pattern, 1, true) then
      fail("expected an error with " .. fmt(pattern) .. ", got " .. fmt(tostring(err)))
    end
  end,
}, { __call = function(_, v, msg, ...) if not v then fail(msg or "assertion failed") end return v, msg, ... end })

function describe(name, fn)
  stack[#stack + 1] = name
  local nb = #befores
  fn()
  for i = #befores, nb + 1, -1 do befores[i] = nil end
  stack[#stack] = nil
end

function before_each(fn) befores[#befores + 1] = fn end

function it(name, fn)
  local full = table.concat(stack, " > ") .. " > " .. name
  fake.reset()
  for _, b in ipairs(befores) do b() end
  local ok, err = xpcall(fn, function(e)
    if type(e) == "table" and e.assertion then return e.assertion .. "\n" .. debug.traceback("", 2) end
    return tostring(e) .. "\n" .. debug.traceback("", 2)
  end)
  if ok then
    results.passed = results.passed + 1
  else
    results.failed = results.failed + 1
    results.errors[#results.errors + 1] = full .. "\n  " .. err
  end
end

local files = { ... }
if #files == 0 then
  local p = io.popen("ls tests/lua/*_spec.lua")
  for f in p:lines() do files[#files + 1] = f end
  p:close()
end
for _, f in ipairs(files) do
  local chunk, err = loadfile(f)
  if not chunk then
    results.failed = results.failed + 1
    results.errors[#results.errors + 1] = f .. ": " .. err
  else
    stack = { f:match("([^/]+)_spec%.lua$") or f }
    local ok, e = pcall(chunk)
    if not ok then
      results.failed = results.failed + 1
      results.errors[#results.errors + 1] = f .. ": " .. tostring(e)
    end
  end
end
for _, e in ipairs(results.errors) do io.stderr:write("FAIL ", e, "\n\n") end
print(("%d passed, %d failed"):format(results.passed, results.failed))
os.exit(results.failed == 0 and 0 or 1)
