// Make every sidebar toggle button work, on a phone and on a desktop.
//
// pydata-sphinx-theme 0.17 adds its own primary-sidebar button to the top bar, so a
// sphinx-book-theme page has two `.primary-toggle` buttons. Both themes attach their click
// handlers to the first one in the page (document.querySelector), which is hidden; the button a
// reader sees and taps has no handler and only shows its tooltip
// (pydata/pydata-sphinx-theme issue 2451). This forwards a click on any other toggle button to
// the first one, where the themes' handlers live: on a narrow screen it opens the sidebar
// drawer, on a wide one it hides or shows the sidebar.
// Since tools/sphinx_ext/dlbook_site.py empties `navbar_persistent`, the theme's top bar (and
// its hidden button) is no longer rendered; this stays as a guard for a theme update that
// brings a second button back.
document.addEventListener("DOMContentLoaded", () => {
  for (const kind of ["primary", "secondary"]) {
    const buttons = [...document.querySelectorAll(`.${kind}-toggle`)];
    const [first, ...others] = buttons;
    for (const button of others) {
      button.addEventListener("click", (event) => {
        event.preventDefault();
        event.stopImmediatePropagation();
        button.blur();
        first.click();
      }, true);
    }
  }
});
