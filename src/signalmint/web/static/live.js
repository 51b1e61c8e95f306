// signalmint live feed: prepends streamed signals to the feed table without a reload.
// Rows are cloned from <template id="feed-row"> (the same macro the server renders) and
// filled with textContent only, never innerHTML, so streamed data cannot inject markup.
// Number formats mirror signalmint/formatting.py; keep the two in step.
(function () {
  "use strict";

  var DASH = "\u2014";

  function num(v) {
    if (v === null || v === undefined || v === "" || typeof v === "boolean") return null;
    var n = Number(v);
    return isNaN(n) ? null : n;
  }
  function trim(text) {
    return text.indexOf(".") < 0 ? text : text.replace(/0+$/, "").replace(/\.$/, "");
  }
  function fmtNum(v) {
    var n = num(v);
    if (n === null) return DASH;
    if (!isFinite(n)) return n > 0 ? "\u221e" : "-\u221e";
    var size = Math.abs(n);
    if (Math.round(size * 100) / 100 < 1000) {
      var t = trim(n.toFixed(2));
      return t === "-0" ? "0" : t;
    }
    if (Math.round(size) < 1e6) return Math.round(n).toLocaleString("en-US");
    var scales = [[1e12, "T"], [1e9, "B"], [1e6, "M"]];
    for (var i = 0; i < scales.length; i++) {
      if (size >= scales[i][0] * 0.9995 || scales[i][1] === "M") {
        var scaled = n / scales[i][0];
        var digits = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(scaled))));
        return trim(scaled.toFixed(digits)) + scales[i][1];
      }
    }
  }
  function fmtRatio(v) {
    var n = num(v);
    if (n === null) return DASH;
    if (!isFinite(n)) return "\u221e\u00d7";
    return (Math.abs(n) >= 100 ? n.toFixed(0) : n.toFixed(1)) + "\u00d7";
  }
  function fmtZ(v) {
    var n = num(v);
    if (n === null) return DASH;
    if (!isFinite(n)) return (n > 0 ? "" : "-") + "\u221e\u03c3";
    return n.toFixed(1) + "\u03c3";
  }
  function fmtPct(v) {
    var n = num(v);
    if (n === null || !isFinite(n)) return DASH;
    var t = (n * 100).toFixed(2);
    if (t === "0.00" || t === "-0.00") return "0.00%";
    return (n > 0 ? "+" : "") + t + "%";
  }
  function direction(v) {
    var n = num(v), text = fmtPct(v);
    return n === null || text === "0.00%" || text === DASH ? "flat" : n > 0 ? "up" : "down";
  }
  function ratioTier(v) {
    var n = num(v);
    if (n === null) return 0;
    return [3, 5, 10, 20].filter(function (edge) { return n >= edge; }).length;
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function fmtTime(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return DASH;
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) +
      " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + " UTC";
  }
  function isoZ(iso) {
    var d = new Date(iso);
    return isNaN(d.getTime()) ? "" : d.toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  function setupCopy() {
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      var source = button.parentElement.querySelector("[data-copy-source]");
      if (!source || !navigator.clipboard) return;
      button.hidden = false;
      button.addEventListener("click", function () {
        var text = source.textContent.replace(/^\$\s*/, "").trim();
        navigator.clipboard.writeText(text).then(function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 1600);
        });
      });
    });
  }

  function setupFeed() {
    var feed = document.querySelector("[data-stream-url]");
    var body = feed && feed.querySelector("[data-feed]");
    var template = document.getElementById("feed-row");
    if (!feed || !body || !template || !window.EventSource) return;
    var maxRows = parseInt(feed.getAttribute("data-max-rows"), 10) || 100;
    var status = document.querySelector("[data-live-status]");
    var label = status && status.querySelector("[data-live-label]");
    var counter = document.querySelector("[data-live-count]");
    var last = document.querySelector("[data-live-last]");
    var baseTitle = document.title;
    var unseen = 0;

    function setState(state, text) {
      if (!status) return;
      status.setAttribute("data-state", state);
      if (label) label.textContent = text;
    }
    function rowId(row) { return parseInt(row.getAttribute("data-id"), 10); }
    function hasRow(id) {
      return Array.prototype.some.call(body.rows, function (row) { return rowId(row) === id; });
    }

    function build(s) {
      var row = template.content.firstElementChild.cloneNode(true);
      var p = s.payload || {};
      var href = "/signals/" + encodeURIComponent(String(s.id));
      row.setAttribute("data-id", String(s.id));
      row.querySelectorAll("[data-f]").forEach(function (el) {
        switch (el.getAttribute("data-f")) {
          case "key": el.textContent = String(s.key); el.setAttribute("href", href); break;
          case "link": el.setAttribute("href", href); el.setAttribute("aria-label", "Open signal " + s.key); break;
          case "time": el.setAttribute("datetime", isoZ(s.time)); break;
          case "time-full": el.textContent = fmtTime(s.time); break;
          case "time-date": el.textContent = fmtTime(s.time).slice(0, 10); break;
          case "time-clock": el.textContent = fmtTime(s.time).slice(11); break;
          case "volume": el.textContent = fmtNum(p.volume); break;
          case "baseline": el.textContent = fmtNum(p.baseline); break;
          case "ratio": el.textContent = fmtRatio(p.ratio); el.setAttribute("data-tier", String(ratioTier(p.ratio))); break;
          case "z": el.textContent = fmtZ(p.z); break;
          case "price_change": el.textContent = fmtPct(p.price_change); el.setAttribute("data-dir", direction(p.price_change)); break;
        }
      });
      if (s.masked && s.masked.length) veilRow(row, s);
      return row;
    }

    // A masked signal: one cell says what it is and what shows the numbers (as feed_row does).
    function veilRow(row, s) {
      var cells = row.querySelectorAll("td");
      var cell = document.createElement("td");
      cell.className = "veil-cell";
      cell.colSpan = 5;
      var v = s.veil || {};
      var parts = [];
      if (v.plan) parts.push(v.plan + " sees the numbers now");
      if (v.reveals_at) parts.push("revealed here on " + fmtTime(v.reveals_at));
      cell.textContent = "\ud83d\udd12 Unusual volume \u00b7 " + (parts.join("; ") || "numbers hidden on this plan");
      for (var i = 2; i < 7 && i < cells.length; i++) cells[i].remove();
      row.insertBefore(cell, row.lastElementChild);
      row.setAttribute("data-veiled", "");
    }

    // A signal that fired but reaches this page later: say so, without its symbol or numbers.
    var teasers = document.querySelector("[data-teasers]");
    function clock(iso) { return fmtTime(iso).slice(11); }
    function onTeaser(event) {
      var t;
      try { t = JSON.parse(event.data); } catch (e) { return; }
      if (!teasers || !t || !t.release_at) return;
      var li = document.createElement("li");
      li.className = "teaser";
      li.setAttribute("data-release", String(t.release_at));
      li.textContent = "A new " + String(t.title || t.automation) + " signal fired at " + clock(t.fired_at) +
        (t.plan ? ": " + String(t.plan) + " has it now" : "") + ", here at " + clock(t.release_at) + ".";
      teasers.insertBefore(li, teasers.firstChild);
      teasers.hidden = false;
      while (teasers.children.length > 20) teasers.lastElementChild.remove();
    }
    function expireTeasers() {
      if (!teasers) return;
      var now = Date.now();
      Array.prototype.slice.call(teasers.children).forEach(function (li) {
        var at = new Date(li.getAttribute("data-release")).getTime();
        if (!isNaN(at) && at <= now) li.remove();
      });
      teasers.hidden = teasers.children.length === 0;
    }
    setInterval(expireTeasers, 5000);

    function insert(s) {
      var id = parseInt(s.id, 10);
      if (isNaN(id) || hasRow(id)) return false;
      var rows = body.querySelectorAll("tr.feed-row");
      var before = null;
      for (var i = 0; i < rows.length; i++) {
        if (rowId(rows[i]) < id) { before = rows[i]; break; }
      }
      if (!before && rows.length >= maxRows) return false; // older than everything we keep
      var empty = body.querySelector("[data-empty]");
      if (empty) empty.remove();
      var row = build(s);
      row.classList.add("is-new");
      row.addEventListener("animationend", function () { row.classList.remove("is-new"); }, { once: true });
      body.insertBefore(row, before);
      var all = body.querySelectorAll("tr.feed-row");
      for (var j = all.length - 1; j >= maxRows; j--) all[j].remove();
      return rows.length === 0 || before === rows[0]; // true when it is the newest row
    }

    function onSignal(event) {
      var s;
      try { s = JSON.parse(event.data); } catch (e) { return; }
      if (!s || s.id === undefined || s.id === null) return;
      if (hasRow(parseInt(s.id, 10))) return; // replayed after a reconnect: already shown
      var newest = insert(s);
      if (!newest) return; // an older signal filling a gap: already counted
      if (counter) {
        var count = (parseInt(counter.getAttribute("data-count"), 10) || 0) + 1;
        counter.setAttribute("data-count", String(count));
        counter.textContent = fmtNum(count);
      }
      if (last) {
        last.textContent = fmtTime(s.time);
        last.setAttribute("datetime", isoZ(s.time));
      }
      if (document.hidden) {
        unseen += 1;
        document.title = "(" + unseen + ") " + baseTitle;
      }
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) { unseen = 0; document.title = baseTitle; }
    });

    var source = new EventSource(feed.getAttribute("data-stream-url"));
    source.addEventListener("open", function () { setState("live", "Live"); });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) setState("offline", "Offline");
      else setState("reconnecting", "Reconnecting");
    });
    source.addEventListener("signal", onSignal);
    source.addEventListener("teaser", onTeaser);
  }

  // Under node (the Python tests check these formatters against signalmint/formatting.py) export them.
  if (typeof module === "object" && module.exports) {
    module.exports = { fmtNum: fmtNum, fmtRatio: fmtRatio, fmtZ: fmtZ, fmtPct: fmtPct, direction: direction,
      ratioTier: ratioTier, fmtTime: fmtTime, isoZ: isoZ };
    return;
  }
  function start() { setupCopy(); setupFeed(); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
