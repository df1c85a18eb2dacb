// Submit a filter form as soon as one of its selects changes (the button stays for no-JS use).
// Grid images whose file is missing get a plain placeholder instead of a broken-image icon.
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
  document.querySelectorAll("#grid img").forEach(function (img) {
    if (img.complete && img.naturalWidth === 0) { missing(img); return; }
    img.addEventListener("error", function () { missing(img); });
  });
});
