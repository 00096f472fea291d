"""The headless browser the web-page tests use runs pages for real: scripts execute, hovering fires events.

If this fails, every page test after it would fail for the same reason; this one names it plainly.
"""
from tests._browser import chromium_driver

PAGE = """<!doctype html><html><body>
<span id="word">hover me</span><p id="out">script did not run</p>
<script>
document.getElementById("out").textContent = "script ran";
document.getElementById("word").addEventListener("mouseover", () => {
  document.getElementById("out").textContent = "hovered";
});
</script></body></html>"""


def test_headless_chromium_runs_scripts_and_hover_events(tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    page = tmp_path / "page.html"
    page.write_text(PAGE, encoding="utf-8")
    with chromium_driver() as driver:
        driver.get(page.as_uri())
        out = driver.find_element(By.ID, "out")
        assert out.text == "script ran", f"inline script did not run in headless Chromium: {out.text!r}"
        ActionChains(driver).move_to_element(driver.find_element(By.ID, "word")).perform()
        assert out.text == "hovered", f"mouseover did not reach the page's listener: {out.text!r}"
