// fieldsync console: a little vanilla JavaScript on top of server-rendered
// pages. Everything works without it except map pan/zoom and keyboard
// shortcuts.
(function () {
  "use strict";

  function ready(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  ready(function () {
    // Drop-downs that apply a filter at once.
    document.querySelectorAll("[data-autosubmit]").forEach(function (el) {
      el.addEventListener("change", function () { el.form.submit(); });
    });
    // Forms that ask first (revoking a device).
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.dataset.confirm)) e.preventDefault();
      });
    });
    var map = document.getElementById("map");
    if (map) initMap(map);
    var queue = document.getElementById("queue");
    if (queue) initQueue(queue);
  });

  // ---- map: pan, zoom, constant point size, optional tiles ----
  function initMap(svg) {
    var b = svg.viewBox.baseVal;
    var init = { x: b.x, y: b.y, w: b.width, h: b.height };
    var vb = { x: b.x, y: b.y, w: b.width, h: b.height };
    var labels = svg.querySelector(".labels");
    var tileURL = document.body.dataset.tileUrl || "";
    var tiles = svg.querySelector("#tiles");

    function apply() {
      svg.setAttribute("viewBox", vb.x + " " + vb.y + " " + vb.w + " " + vb.h);
      var k = vb.w / init.w;
      svg.querySelectorAll(".pt").forEach(function (c) {
        c.setAttribute("r", (parseFloat(c.dataset.r) * Math.max(k, 0.02)).toFixed(3));
      });
      if (labels) labels.style.fontSize = (14 * k) + "px";
      drawTiles();
    }

    function toSvg(clientX, clientY) {
      var pt = svg.createSVGPoint();
      pt.x = clientX; pt.y = clientY;
      return pt.matrixTransform(svg.getScreenCTM().inverse());
    }

    function zoom(f, cx, cy) {
      var nw = Math.min(init.w * 2, Math.max(init.w / 400, vb.w * f));
      var r = nw / vb.w;
      vb.x = cx - (cx - vb.x) * r;
      vb.y = cy - (cy - vb.y) * r;
      vb.w = nw;
      vb.h = vb.h * r;
      apply();
    }

    svg.addEventListener("wheel", function (e) {
      e.preventDefault();
      var p = toSvg(e.clientX, e.clientY);
      zoom(e.deltaY > 0 ? 1.25 : 0.8, p.x, p.y);
    }, { passive: false });

    var drag = null, moved = false;
    svg.addEventListener("pointerdown", function (e) {
      if (e.button !== 0) return;
      drag = { sx: e.clientX, sy: e.clientY, x: vb.x, y: vb.y, id: e.pointerId };
      moved = false;
    });
    svg.addEventListener("pointermove", function (e) {
      if (!drag) return;
      var dx = e.clientX - drag.sx, dy = e.clientY - drag.sy;
      if (!moved && Math.abs(dx) + Math.abs(dy) < 4) return;
      if (!moved) {
        moved = true;
        svg.classList.add("dragging");
        try { svg.setPointerCapture(drag.id); } catch (err) { /* ignore */ }
      }
      var per = vb.w / svg.clientWidth;
      vb.x = drag.x - dx * per;
      vb.y = drag.y - dy * per;
      apply();
    });
    function end() {
      drag = null;
      svg.classList.remove("dragging");
    }
    svg.addEventListener("pointerup", end);
    svg.addEventListener("pointercancel", end);
    // A drag is not a click on the point under the pointer.
    svg.addEventListener("click", function (e) {
      if (moved) { e.preventDefault(); e.stopPropagation(); moved = false; }
    }, true);

    document.querySelectorAll("[data-zoom]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        var cx = vb.x + vb.w / 2, cy = vb.y + vb.h / 2;
        if (btn.dataset.zoom === "in") zoom(0.6, cx, cy);
        else if (btn.dataset.zoom === "out") zoom(1 / 0.6, cx, cy);
        else { vb = { x: init.x, y: init.y, w: init.w, h: init.h }; apply(); }
      });
    });

    // Web Mercator tiles under the features, when a tile URL is set.
    function drawTiles() {
      if (!tileURL || !tiles) return;
      var x0 = parseFloat(svg.dataset.x0), y0 = parseFloat(svg.dataset.y0), s = parseFloat(svg.dataset.scale);
      var screenPerWorld = (svg.clientWidth / vb.w) * s;
      var z = Math.max(0, Math.min(19, Math.round(Math.log2(screenPerWorld))));
      var tw = 256 / Math.pow(2, z);
      var wx0 = x0 + vb.x / s, wy0 = y0 + vb.y / s, wx1 = x0 + (vb.x + vb.w) / s, wy1 = y0 + (vb.y + vb.h) / s;
      var tx0 = Math.floor(wx0 / tw), tx1 = Math.floor(wx1 / tw), ty0 = Math.floor(wy0 / tw), ty1 = Math.floor(wy1 / tw);
      var n = Math.pow(2, z);
      if ((tx1 - tx0 + 1) * (ty1 - ty0 + 1) > 150) return;
      while (tiles.firstChild) tiles.removeChild(tiles.firstChild);
      for (var tx = tx0; tx <= tx1; tx++) {
        for (var ty = Math.max(0, ty0); ty <= Math.min(n - 1, ty1); ty++) {
          var img = document.createElementNS("http://www.w3.org/2000/svg", "image");
          var x = ((tx % n) + n) % n;
          img.setAttribute("href", tileURL.replace("{z}", z).replace("{x}", x).replace("{y}", ty));
          img.setAttribute("x", ((tx * tw - x0) * s).toFixed(2));
          img.setAttribute("y", ((ty * tw - y0) * s).toFixed(2));
          img.setAttribute("width", (tw * s + 0.5).toFixed(2));
          img.setAttribute("height", (tw * s + 0.5).toFixed(2));
          tiles.appendChild(img);
        }
      }
    }
    apply();
  }

  // ---- review queue: j/k move, space select, a/r/x act, o open ----
  function initQueue(table) {
    var rows = Array.prototype.slice.call(table.querySelectorAll("tbody tr[data-id]"));
    var form = document.getElementById("review-form");
    var reason = document.getElementById("reason");
    var all = document.getElementById("select-all");
    var cur = -1;
    if (all) {
      all.addEventListener("change", function () {
        rows.forEach(function (r) { r.querySelector("input[type=checkbox]").checked = all.checked; });
      });
    }
    function focus(i) {
      if (!rows.length) return;
      cur = Math.max(0, Math.min(rows.length - 1, i));
      rows.forEach(function (r, j) { r.classList.toggle("cur", j === cur); });
      rows[cur].scrollIntoView({ block: "nearest" });
    }
    rows.forEach(function (r, i) {
      r.addEventListener("click", function (e) {
        if (e.target.tagName !== "A" && e.target.tagName !== "INPUT") focus(i);
      });
    });
    function act(action) {
      var chosen = rows.filter(function (r) { return r.querySelector("input[type=checkbox]").checked; });
      if (!chosen.length) {
        if (cur < 0) return;
        rows[cur].querySelector("input[type=checkbox]").checked = true;
      }
      if (action !== "approve" && !reason.value.trim()) {
        var r = window.prompt(reason.placeholder);
        if (!r || !r.trim()) return;
        reason.value = r.trim();
      }
      var btn = document.getElementById("bulk-" + action);
      if (form.requestSubmit) form.requestSubmit(btn);
      else btn.click();
    }
    document.addEventListener("keydown", function (e) {
      var t = e.target;
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      if ((t.tagName === "INPUT" && t.type !== "checkbox") || t.tagName === "TEXTAREA" || t.tagName === "SELECT") return;
      switch (e.key) {
        case "j": focus(cur + 1); break;
        case "k": focus(cur - 1); break;
        case " ":
          if (cur >= 0) { var cb = rows[cur].querySelector("input[type=checkbox]"); cb.checked = !cb.checked; }
          break;
        case "a": act("approve"); break;
        case "r": act("rework"); break;
        case "x": act("reject"); break;
        case "o": case "Enter":
          if (cur >= 0) { var a = rows[cur].querySelector("a"); if (a) window.location = a.href; }
          break;
        default: return;
      }
      e.preventDefault();
    });
  }
})();
