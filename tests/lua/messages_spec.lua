local fake = require "fake_mf"
local msgs = require "mf.messages"

local body = {
  model = "auto",
  messages = {
    { role = "system", content = "Be brief." },
    { role = "developer", content = { { type = "text", text = "Cite sources." } } },
    { role = "user", content = "first question" },
    { role = "assistant", content = "answer", tool_calls = {
      { id = "c1", type = "function", ["function"] = { name = "lookup", arguments = '{"q":"x"}' } } } },
    { role = "tool", tool_call_id = "c1", content = "result" },
    { role = "user", content = {
      { type = "text", text = "look at" },
      { type = "image_url", image_url = { url = "data:," } },
      { type = "text", text = "this" } } },
  },
  tools = {
    { type = "function", ["function"] = { name = "lookup", description = "find", parameters = { type = "object" } } },
    { type = "function", name = "flat_tool" },
  },
}

describe("mf.messages", function()
  it("joins text parts and skips other parts", function()
    assert.equal("look at\nthis", msgs.text(body.messages[6]))
    assert.equal("", msgs.text({ role = "user" }))
    assert.equal("", msgs.text(nil))
  end)
  it("reads the last and first user messages", function()
    assert.equal("look at\nthis", msgs.last_user(body))
    assert.equal("first question", msgs.first_user(body))
    assert.same({ "first question", "look at\nthis" }, msgs.user_texts(body))
    assert.equal("", msgs.last_user({ messages = {} }))
  end)
  it("reads the system prompt from system and developer messages", function()
    assert.equal("Be brief.\nCited sources.", msgs.system(body):gsub("Cite", "Cited"))
    assert.equal("", msgs.system({}))
  end)
  it("reads the running request's body when none is given", function()
    fake.state.body = { messages = { { role = "user", content = "from the request" } } }
    assert.equal("from the request", msgs.last_user())
  end)
  it("lists tools of both shapes and finds one by name", function()
    local t = msgs.tools(body)
    assert.equal(2, #t)
    assert.equal("lookup", t[1].name)
    assert.equal("find", t[1].description)
    assert.equal("flat_tool", t[2].name)
    assert.truthy(msgs.has_tool(body, "flat_tool"))
    assert.falsy(msgs.has_tool(body, "other"))
    assert.same({}, msgs.tools({}))
  end)
  it("lists the assistant's tool calls", function()
    assert.same({ { id = "c1", name = "lookup", arguments = '{"q":"x"}' } }, msgs.tool_calls(body))
  end)
  it("estimates tokens of a text and of the messages", function()
    assert.equal(3, msgs.estimate_tokens("0123456789"))
    assert.equal(0, msgs.estimate_tokens(""))
    assert.equal(math.ceil((9 + 13 + 14 + 6 + 6 + 12) / 4), msgs.estimate_tokens(body))
  end)
  it("prepends a user message after the system messages, a system one first", function()
    local b = { messages = { { role = "system", content = "s" }, { role = "user", content = "u" } } }
    msgs.add(b, "user", "ctx", "prepend")
    assert.same({ "system", "user", "user" }, { b.messages[1].role, b.messages[2].role, b.messages[3].role })
    assert.equal("ctx", b.messages[2].content)
    msgs.add(b, "system", "first", "prepend")
    assert.equal("first", b.messages[1].content)
    msgs.add(b, "user", "last")
    assert.equal("last", b.messages[#b.messages].content)
  end)
end)
