"""The report of a real smoke study, opened in headless Chromium as a reader would open it.

Debian's ``chromium`` and ``chromium-driver`` come from ``make setup``; nothing is downloaded at
run time. The test asserts a clean JavaScript console, counts the rendered plots and checks that
each holds data and that every numeric y axis carries at least two tick labels (a log axis over
a narrow range used to show one), sorts the trial table, and leaves a full-page screenshot in
``test-artifacts/report.png`` for a person to look at. Its timeout counts the test alone
(``func_only``): the session's smoke study and the browser start have their own limits.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from logah.analysis import load_study, write_report
from logah.analysis.figures import study_panels

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="needs Debian's chromium and chromium-driver (make setup)")

# per plot: traces drawn in the page (SVG groups; parcoords draws one group) and data points
_PLOTS_JS = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (gd) {
  var points = gd._fullData.map(function (t) {
    if (t.dimensions) { return t.dimensions[0].values.length; }
    return (t.x && t.x.length) || (t.y && t.y.length) || 0;
  });
  return {id: gd.id, traces: gd._fullData.length, points: points,
          drawn: gd.querySelectorAll('g.trace, g.parcoords').length,
          marks: gd.querySelectorAll('path.point, path.js-line, g.bars path, .parcoords .axis').length};
});
"""


# per numeric y axis of every plot: the tick labels drawn, and the axis title
_Y_AXES_JS = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(function (gd) {
  return Object.keys(gd._fullLayout).filter(function (k) { return /^yaxis[0-9]*$/.test(k); })
    .filter(function (k) { return gd._fullLayout[k].type !== 'category'; })
    .map(function (k) {
      var id = 'y' + k.slice(5);
      var labels = Array.from(gd.querySelectorAll('g.' + id + 'tick text'))
        .map(function (t) { return t.textContent; }).filter(Boolean);
      return {plot: gd.id, axis: id, title: (gd._fullLayout[k].title || {}).text || '',
              labels: labels};
    });
});
"""
_X_TITLES_JS = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (gd) {
  return {plot: gd.id, titles: Array.from(gd.querySelectorAll('.g-xtitle text, [class^="g-x"][class$="title"] text'))
                                    .map(function (t) { return t.textContent; })};
});
"""


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--enable-unsafe-swiftshader", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.mark.timeout(600, func_only=True)
def test_report_renders_every_plot_with_data_and_no_console_errors(smoke_study, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    report = write_report([smoke_study], tmp_path / "report.html")
    expected = [p for p in study_panels(load_study(smoke_study)) if p.figure is not None]
    browser.get(report.as_uri())
    WebDriverWait(browser, 60).until(lambda d: d.execute_script(
        "return document.querySelectorAll('.js-plotly-plot .main-svg').length") >= len(expected))

    plots = browser.execute_script(_PLOTS_JS)
    assert len(plots) == len(expected)
    for plot in plots:
        assert plot["traces"] > 0 and sum(plot["points"]) > 0, plot
        assert plot["drawn"] > 0 and plot["marks"] > 0, plot
    axes = browser.execute_script(_Y_AXES_JS)
    assert axes
    for axis in axes:   # one tick label on an axis (a log axis over 2.3..2.6) cannot be read
        assert len(axis["labels"]) >= 2, axis
    titles = {p["plot"]: p["titles"] for p in browser.execute_script(_X_TITLES_JS)}
    importance = [t for plot, ts in titles.items() if plot.endswith("-importances-plot") for t in ts]
    assert importance and not any("(%)" in t for t in importance), importance   # shares, not %
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(function (r) { return r.name; })")
    assert not resources   # self-contained: nothing fetched

    # the trial table sorts on a click (numbers as numbers, empty cells last)
    table = browser.find_element(By.CSS_SELECTOR, "table.trials")
    headers = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    assert len(headers) == len(set(headers)), headers   # no two columns called the same
    column = headers.index("best")
    table.find_elements(By.CSS_SELECTOR, "thead th")[column].click()
    cells = [row.find_elements(By.TAG_NAME, "td")[column].get_attribute("data-sort")
             for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
    values = [float(c) for c in cells if c]
    assert values == sorted(values) and cells[len(values):] == [""] * (len(cells) - len(values))

    ARTIFACTS.mkdir(exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, height + 200)
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(ARTIFACTS / "report.png"))
