// deepscan review console: keyboard shortcuts only. Every action also works without script.
// Queue: j/k select the next/previous row, Enter or o opens it, f/r/u label it fake/real/unsure.
// Item page: f/r/u label the item, j/k go to the next/previous item, q back to the queue.
(function () {
  "use strict";

  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  var rows = Array.prototype.slice.call(document.querySelectorAll("tr[data-item]"));
  var current = -1;

  function select(index) {
    if (!rows.length) return;
    index = Math.max(0, Math.min(rows.length - 1, index));
    if (current >= 0) rows[current].classList.remove("selected");
    current = index;
    rows[current].classList.add("selected");
    rows[current].scrollIntoView({ block: "nearest" });
  }

  var LABELS = { f: "fake", r: "real", u: "unsure" };

  // j/k pass by rows a teammate is reviewing (claimed): they stay visible, but out of the way.
  function step(direction) {
    for (var i = current + direction; i >= 0 && i < rows.length; i += direction) {
      if (rows[i].getAttribute("data-claimed") !== "other") { select(i); return; }
    }
  }

  function onQueue(key) {
    if (key === "j") { step(1); return true; }
    if (key === "k") { step(-1); return true; }
    if (current < 0) return false;
    var row = rows[current];
    if (key === "Enter" || key === "o") {
      var link = row.querySelector("a.open");
      if (link) { link.click(); return true; }
    }
    if (LABELS[key]) {
      var button = row.querySelector('button[data-label="' + LABELS[key] + '"]');
      if (button) { button.click(); return true; }
    }
    return false;
  }

  function onPage(key) {
    if (!/^[a-z]$/.test(key)) return false;
    var target = document.querySelector('[data-shortcut="' + key + '"]');
    if (target) { target.click(); return true; }
    return false;
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var handled = rows.length ? onQueue(event.key) || onPage(event.key) : onPage(event.key);
    if (handled) event.preventDefault();
  });

  // After a label the server names the row to carry on from (?selected=ID): the moderator keeps their place.
  if (rows.length) {
    var kept = rows.findIndex(function (row) { return row.classList.contains("selected"); });
    if (kept >= 0) { select(kept); } else { step(1); if (current < 0) select(0); }
  }
})();
