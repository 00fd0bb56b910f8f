// The park plan with Leaflet (vendor/leaflet/leaflet.js, leaflet.css and
// vendor/leaflet.heat/leaflet-heat.js load first). No tile layer: the plan is drawn from our
// own data only, so the page needs no map server and leaks no position to one.
//
// For every element with data-plan-url (a div sized by the page's CSS class "plan"): fetch
// (same origin) the JSON
//   {"bounds": [[lat, lon], [lat, lon]],
//    "areas": [{"stop": 1, "name": "...", "polygon": [[lat, lon], ...],
//               "verdict": "good" | "moderate" | "poor" | null}],
//    "stops": [{"number": 1, "name": "...", "latitude": .., "longitude": .., "url": "/park/stops/1"}],
//    "heat": [[lat, lon, intensity 0..1], ...]}
// and draw the areas coloured by verdict, one focusable marker per stop (Enter or a click opens
// its url) with its number always shown, and a heat layer. data-label names the map for screen
// readers. The data is fetched again every 15 s and swapped in without redrawing the view.
(function () {
  "use strict";

  const REFRESH_MS = 15000;
  const VERDICT_COLOURS = { good: "#1a7f37", moderate: "#9a6700", poor: "#cf222e" };
  const NO_VERDICT_COLOUR = "#6e7781";
  const STOP_SIZE = 22;

  function colour(verdict) {
    return Object.prototype.hasOwnProperty.call(VERDICT_COLOURS, verdict)
      ? VERDICT_COLOURS[verdict]
      : NO_VERDICT_COLOUR;
  }

  function isLatLng(pair) {
    return Array.isArray(pair) && Number.isFinite(pair[0]) && Number.isFinite(pair[1]);
  }

  function textElement(tag, text) {
    const el = document.createElement(tag);
    el.textContent = text;
    return el;
  }

  // Only paths on this site: the URL comes from data, and a marker must not lead elsewhere.
  function localUrl(url) {
    if (typeof url !== "string") return null;
    const target = new URL(url, window.location.href);
    return target.origin === window.location.origin ? target.href : null;
  }

  // A stop as a round, numbered, keyboard-focusable marker (a div icon, because Leaflet makes
  // only markers focusable, not vector circles).
  function stopMarker(stop, verdict) {
    const dot = document.createElement("span");
    Object.assign(dot.style, {
      display: "block",
      width: "100%",
      height: "100%",
      boxSizing: "border-box",
      borderRadius: "50%",
      border: "3px solid #ffffff",
      background: colour(verdict),
      boxShadow: "0 0 0 1px #24292f",
    });
    const label = `${stop.number}. ${stop.name}`;
    const marker = L.marker([stop.latitude, stop.longitude], {
      icon: L.divIcon({
        html: dot,
        className: "plan-stop",
        iconSize: [STOP_SIZE, STOP_SIZE],
        iconAnchor: [STOP_SIZE / 2, STOP_SIZE / 2],
      }),
      keyboard: true,
      title: label,
    });
    marker.bindTooltip(textElement("span", String(stop.number)), {
      permanent: true,
      direction: "top",
      offset: [0, -STOP_SIZE / 2],
    });
    const url = localUrl(stop.url);
    marker.on("add", () => {
      const icon = marker.getElement();
      icon.setAttribute("aria-label", label);
      if (!url) icon.setAttribute("aria-disabled", "true");
    });
    if (url) {
      marker.on("click", () => window.location.assign(url));
      marker.on("keydown", (e) => {
        if (e.originalEvent.key === "Enter" || e.originalEvent.key === " ") {
          e.originalEvent.preventDefault();
          window.location.assign(url);
        }
      });
    }
    return marker;
  }

  // Areas and stops of one answer as a single layer group, so a refresh swaps one for one.
  function overlay(data) {
    const group = L.layerGroup();
    const verdictOfStop = new Map();
    for (const area of Array.isArray(data.areas) ? data.areas : []) {
      const ring = (area.polygon || []).filter(isLatLng);
      if (ring.length < 3) continue;
      verdictOfStop.set(area.stop, area.verdict);
      const c = colour(area.verdict);
      L.polygon(ring, { color: c, weight: 2, fillColor: c, fillOpacity: 0.2 })
        .bindTooltip(textElement("span", String(area.name)), { sticky: true })
        .addTo(group);
    }
    for (const stop of Array.isArray(data.stops) ? data.stops : []) {
      if (!Number.isFinite(stop.latitude) || !Number.isFinite(stop.longitude)) continue;
      stopMarker(stop, verdictOfStop.get(stop.number)).addTo(group);
    }
    return group;
  }

  function heatPoints(data) {
    return (Array.isArray(data.heat) ? data.heat : [])
      .filter((p) => isLatLng(p) && Number.isFinite(p[2]))
      .map((p) => [p[0], p[1], Math.min(Math.max(p[2], 0), 1)]);
  }

  class Plan {
    constructor(el) {
      this.el = el;
      this.layer = null;
      this.heat = null;
      el.tabIndex = 0;
      el.setAttribute("aria-label", el.dataset.label || "Park plan");
      el.replaceChildren();
      this.map = L.map(el, { keyboard: true, zoomSnap: 0.25, maxZoom: 22, minZoom: 2 });
      this.timer = window.setInterval(() => {
        if (!el.isConnected) this.close();
        else if (!document.hidden) this.load();
      }, REFRESH_MS);
      this.load();
    }

    async load() {
      const url = localUrl(this.el.dataset.planUrl);
      if (!url) return;
      let data;
      try {
        const response = await fetch(url, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        data = await response.json();
      } catch (err) {
        this.el.dataset.state = "error"; // the last plan stays; the next refresh may succeed
        return;
      }
      this.draw(data);
    }

    draw(data) {
      if (!this.heat) {
        const bounds = Array.isArray(data.bounds) ? data.bounds.filter(isLatLng) : [];
        if (bounds.length === 2) this.map.fitBounds(bounds, { padding: [16, 16] });
        else this.map.setView([0, 0], 2);
        // leaflet.heat scales intensity down by 2^(maxZoom - zoom); with no tile layer the map's
        // maxZoom is ours, far above a park's fitted zoom, so anchor it at the fitted zoom.
        // Added first so its canvas lies under the areas' SVG.
        this.heat = L.heatLayer([], {
          radius: 25,
          blur: 15,
          max: 1,
          maxZoom: this.map.getZoom(),
        }).addTo(this.map);
        if (this.heat._canvas) this.heat._canvas.style.pointerEvents = "none"; // clicks pass
      }
      const next = overlay(data).addTo(this.map);
      if (this.layer) this.map.removeLayer(this.layer); // after adding: no empty frame
      this.layer = next;
      this.heat.setLatLngs(heatPoints(data));
      this.el.dataset.state = "ok";
    }

    close() {
      window.clearInterval(this.timer);
      this.map.remove();
    }
  }

  const started = new WeakSet();

  function scan(scope) {
    if (typeof L === "undefined" || typeof L.heatLayer !== "function") return; // fallback stays
    const elements = [...scope.querySelectorAll("[data-plan-url]")];
    if (scope.matches && scope.matches("[data-plan-url]")) elements.unshift(scope);
    for (const el of elements) {
      if (started.has(el)) continue;
      started.add(el);
      new Plan(el);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => scan(document));
  } else {
    scan(document);
  }
  // Content swapped in by htmx.
  document.addEventListener("htmx:load", (event) => scan(event.target));
})();
