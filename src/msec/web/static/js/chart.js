// Time-series charts with uPlot (vendor/uplot/uPlot.iife.min.js and uPlot.min.css load first).
//
// For every element with data-series-url: fetch (same origin) the JSON
//   {"label": "CO2", "unit": "ppm", "threshold": 1000 | null,
//    "series": [{"name": "llamas-01", "points": [[epoch_seconds, value | null], ...]}, ...]}
// and draw one line per series on a local-time x axis, with a legend, drag-to-zoom on x and
// double-click to reset (uPlot's defaults), and a dashed line at the threshold. Series with
// different timestamps share the union of them; missing values are gaps the line spans.
// Optional attributes: data-label (accessible name), data-height (plot height in px, default
// 260), data-empty-text (default "No data"), data-error-text (default "Could not load data").
// Redraws on the DOM event "msec:refresh" sent to the element, and every 60 s.
(function () {
  "use strict";

  const REFRESH_MS = 60000;
  const DEFAULT_HEIGHT = 260;
  // Primer's accessible palette: each reaches 4.5:1 against white and they differ in hue.
  const PALETTE = [
    "#0969da", "#bc4c00", "#1a7f37", "#8250df", "#cf222e", "#1b7c83", "#bf3989", "#57606a",
  ];
  const THRESHOLD_COLOUR = "#cf222e";

  // Union of every series' timestamps, ascending, and one value array per series aligned to it
  // (null where a series has no point). A series' later duplicate timestamp wins.
  function merge(series) {
    const xs = new Set();
    const byTime = series.map((s) => {
      const values = new Map();
      for (const [t, v] of s.points || []) {
        if (!Number.isFinite(t)) continue;
        xs.add(t);
        values.set(t, Number.isFinite(v) ? v : null);
      }
      return values;
    });
    const x = [...xs].sort((a, b) => a - b);
    return [x, ...byTime.map((values) => x.map((t) => (values.has(t) ? values.get(t) : null)))];
  }

  function formatValue(value, unit) {
    if (value === null || value === undefined) return "\u2014";
    const text = Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
    return unit ? `${text} ${unit}` : text;
  }

  // A uPlot draw hook: the dashed threshold line with its value at the right end.
  function thresholdHook(threshold, unit) {
    return (u) => {
      if (threshold === null || threshold === undefined) return;
      const y = Math.round(u.valToPos(threshold, "y", true));
      const { left, top, width, height } = u.bbox;
      if (y < top || y > top + height) return;
      const ratio = window.devicePixelRatio || 1;
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = THRESHOLD_COLOUR;
      ctx.fillStyle = THRESHOLD_COLOUR;
      ctx.lineWidth = 1.5 * ratio;
      ctx.setLineDash([6 * ratio, 4 * ratio]);
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + width, y);
      ctx.stroke();
      ctx.font = `${11 * ratio}px sans-serif`;
      ctx.textAlign = "right";
      ctx.textBaseline = "bottom";
      ctx.fillText(formatValue(threshold, unit), left + width - 4 * ratio, y - 2 * ratio);
      ctx.restore();
    };
  }

  function options(el, data, width) {
    const unit = typeof data.unit === "string" ? data.unit : "";
    const threshold = Number.isFinite(data.threshold) ? data.threshold : null;
    const label = typeof data.label === "string" ? data.label : "";
    return {
      width,
      height: Number.parseInt(el.dataset.height, 10) || DEFAULT_HEIGHT,
      scales: {
        x: { time: true },
        y: {
          // Keep the threshold in view: a limit far above the data is itself information.
          range: (u, min, max) => {
            if (min === null || max === null) return [threshold ?? 0, (threshold ?? 0) + 1];
            const lo = threshold === null ? min : Math.min(min, threshold);
            const hi = threshold === null ? max : Math.max(max, threshold);
            return uPlot.rangeNum(lo, hi, 0.1, true);
          },
        },
      },
      cursor: { drag: { x: true, y: false } },
      series: [
        {},
        ...data.series.map((s, i) => ({
          label: String(s.name),
          stroke: PALETTE[i % PALETTE.length],
          width: 2,
          spanGaps: true,
          value: (u, v) => formatValue(v, unit),
        })),
      ],
      axes: [{}, { label: unit ? `${label} (${unit})` : label, size: 60 }],
      hooks: { draw: [thresholdHook(threshold, unit)] },
    };
  }

  // What must match for new data to reuse the drawn chart instead of rebuilding it.
  function shapeOf(data) {
    return JSON.stringify([data.label, data.unit, data.threshold, data.series.map((s) => s.name)]);
  }

  function isEmpty(data) {
    return !Array.isArray(data.series) || data.series.every((s) => !s.points || !s.points.length);
  }

  class Chart {
    constructor(el) {
      this.el = el;
      this.plot = null;
      this.shape = null;
      this.message = document.createElement("p");
      this.message.className = "chart-message";
      this.message.hidden = true;
      this.holder = document.createElement("div");
      this.holder.className = "chart-plot";
      if (el.dataset.label) {
        this.holder.setAttribute("role", "figure");
        this.holder.setAttribute("aria-label", el.dataset.label);
      }
      // Whatever the page put inside (a no-JS fallback) gives way to the chart.
      el.replaceChildren(this.message, this.holder);
      this.resizer = new ResizeObserver(() => this.resize());
      this.resizer.observe(el);
      this.refresh = () => this.load();
      el.addEventListener("msec:refresh", this.refresh);
      this.timer = window.setInterval(() => {
        if (!el.isConnected) this.close();
        else if (!document.hidden) this.load();
      }, REFRESH_MS);
      this.load();
    }

    width() {
      return Math.max(this.el.clientWidth, 100);
    }

    resize() {
      if (this.plot && this.plot.width !== this.width()) {
        this.plot.setSize({ width: this.width(), height: this.plot.height });
      }
    }

    say(text) {
      this.message.textContent = text;
      this.message.hidden = false;
    }

    async load() {
      const url = new URL(this.el.dataset.seriesUrl, window.location.href);
      if (url.origin !== window.location.origin) {
        this.say(this.el.dataset.errorText || "Could not load data");
        return;
      }
      let data;
      try {
        const response = await fetch(url, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        data = await response.json();
      } catch (err) {
        // Keep the last chart on screen; the next refresh may succeed.
        this.say(this.el.dataset.errorText || "Could not load data");
        this.el.dataset.state = "error";
        return;
      }
      this.draw(data);
    }

    draw(data) {
      if (!data || typeof data !== "object" || isEmpty(data)) {
        this.destroyPlot();
        this.say(this.el.dataset.emptyText || "No data");
        this.el.dataset.state = "empty";
        return;
      }
      this.message.hidden = true;
      this.el.dataset.state = "ok";
      const aligned = merge(data.series);
      const shape = shapeOf(data);
      if (this.plot && this.shape === shape) {
        // Keep the user's zoom unless the chart shows everything it had.
        const old = this.plot.data[0];
        const x = this.plot.scales.x;
        const zoomed = old.length > 0 && (x.min > old[0] || x.max < old[old.length - 1]);
        this.plot.setData(aligned, !zoomed);
        return;
      }
      this.destroyPlot();
      this.shape = shape;
      this.plot = new uPlot(options(this.el, data, this.width()), aligned, this.holder);
    }

    destroyPlot() {
      if (this.plot) this.plot.destroy();
      this.plot = null;
      this.shape = null;
    }

    close() {
      window.clearInterval(this.timer);
      this.resizer.disconnect();
      this.el.removeEventListener("msec:refresh", this.refresh);
      this.destroyPlot();
    }
  }

  const started = new WeakSet();

  function scan(scope) {
    if (typeof uPlot === "undefined") return; // library missing: the fallback content stays
    const elements = [...scope.querySelectorAll("[data-series-url]")];
    if (scope.matches && scope.matches("[data-series-url]")) elements.unshift(scope);
    for (const el of elements) {
      if (started.has(el)) continue;
      started.add(el);
      new Chart(el);
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
