// Submit a filter form as soon as one of its selects changes (the button stays for no-JS use).
// Grid images whose file is missing get a plain placeholder instead of a broken-image icon.
// Tables wider than the screen get a visible cue that they scroll sideways.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
    sel.addEventListener("change", function () { sel.form.submit(); });
  });
  function missing(img) {
    var box = document.createElement("div");
    box.className = "missing";
    box.textContent = "no image file";
    img.replaceWith(box);
  }
  // A table wider than its box scrolls inside it; say so above it (and shade its edge).
  function cues() {
    document.querySelectorAll(".table-wrap").forEach(function (wrap) {
      var wide = wrap.scrollWidth > wrap.clientWidth + 1;
      wrap.classList.toggle("scrolls", wide);
      var hint = wrap.previousElementSibling;
      if (!hint || !hint.classList.contains("scroll-hint")) {
        if (!wide) return;
        hint = document.createElement("p");
        hint.className = "scroll-hint";
        hint.textContent = "\u2194 the table is wider than the screen: swipe it sideways";
        wrap.parentNode.insertBefore(hint, wrap);
      }
      hint.hidden = !wide;
    });
  }
  cues();
  window.addEventListener("resize", cues);
  document.querySelectorAll("details").forEach(function (d) { d.addEventListener("toggle", cues); });
  document.querySelectorAll("#grid img").forEach(function (img) {
    if (img.complete && img.naturalWidth === 0) { missing(img); return; }
    img.addEventListener("error", function () { missing(img); });
  });
});
