"""The Chat tab in headless Chromium over the real `tunestack ui`: a greedy reply streamed into the page is the text
the chat's `tunestack serve` gives an `openai` client at temperature 0, and the page shows the same chat as a
`tunestack infer` command. A model outside the readable folders is refused in the page."""

from __future__ import annotations

import openai
from playwright.sync_api import expect

from tunestack.ui.jobs import Jobs
from tunestack.ui.serve_tab import server_url
from ui_helpers import choose, open_ui, set_number

PROMPT = "What is 12 + 30?"


def _copied_reply(page) -> str:
    """The assistant's message as its copy button puts it on the clipboard: the text, not its rendering."""
    page.locator("#chat-history button[title='Copy message']").last.click()  # the last message is the reply
    return page.evaluate("navigator.clipboard.readText()")


def test_a_greedy_reply_in_the_page_matches_the_server(page, ui_server, ui_workdir, artifacts):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_ui(page, ui_server)
    page.click("button[role=tab]:has-text('Chat')")
    model = str((ui_workdir / "tiny").resolve())
    choose(page, "chat-model", model)
    set_number(page, "chat-max-new-tokens", 12)
    command = page.locator(".command textarea, .command input").filter(visible=True)
    expect(command).to_have_value(f"tunestack infer --model {model} --temperature 0 --top_p 1 --max_new_tokens 12")

    page.locator("#chat-message textarea, #chat-message input").fill(PROMPT)
    page.keyboard.press("Enter")
    page.locator("#chat-history .bot").first.wait_for(timeout=120_000)
    page.locator("#chat-history .generating").wait_for(state="detached")
    page.screenshot(path=artifacts / "chat.png", full_page=True)

    jobs = Jobs(ui_server.runs / ".ui-jobs")
    running = jobs.running("chat")
    assert running, [(j.command, j.returncode(), j.log_path.read_text()[-2000:]) for j in jobs.list("chat")]
    job = running[0]
    client = openai.OpenAI(base_url=server_url(job) + "/v1", api_key="none")
    expected = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                              temperature=0, max_tokens=12).choices[0].message.content
    assert expected
    assert _copied_reply(page) == expected


def test_a_model_outside_the_readable_folders_is_refused_in_the_page(page, ui_server):
    open_ui(page, ui_server)
    page.click("button[role=tab]:has-text('Chat')")
    choose(page, "chat-model", "/etc")
    page.locator("#chat-message textarea, #chat-message input").fill("hello")
    page.keyboard.press("Enter")
    page.locator("#chat-status", has_text="outside the folders this UI may read").wait_for()
    assert page.locator("#chat-history .bot").count() == 0
