// The live results page: applies the server's "update" events (what changed since the
// last one) at most once per animation frame. Every list is bounded by the server's
// limits; text from results is only ever set as textContent, never parsed as HTML.
"use strict";

const ui = { updates: 0, frames: 0, lastApplyMs: 0, maxApplyMs: 0 };
window.streamprocUi = ui;
let pending = [];
let scheduled = false;

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children || []) if (child) node.append(child);
  return node;
}

function percent(p) {
  return typeof p === "number" ? `${(100 * p).toFixed(1)}%` : "";
}

function leftOut(part) {
  return part.images_left_out ? el("div", { class: "meta", text: `${part.images_left_out} image(s) too large to show` }) : null;
}

function footer(part) {
  return el("div", { class: "by", text: `${part.plugin} · ${part.model_version || ""}` });
}

const renderers = {
  tags(part) {
    const verdict = part.in_distribution === false
      ? el("div", { class: "rejected", text: `rejected: ${part.rejected_reason || part.label}` })
      : el("div", { class: "label", text: part.label });
    const tags = el("ul", { class: "tags" }, part.tags.map((t) => el("li", { text: `${t.name} ${percent(t.p)}` })));
    return [verdict, tags];
  },
  artwork(part) {
    const images = part.images.map((src) => el("img", { class: "artwork", src, alt: `artwork: ${part.category}` }));
    return [el("div", { text: `artwork: ${part.category} (seed ${part.seed})` }), el("div", { class: "images" }, images), leftOut(part)];
  },
  enhance(part, card) {
    // Each enhanced image beside its input: the upload's image, or the artwork image it upscaled.
    const inputs = part.source === "artwork" ? (card.parts.artwork || {}).images || [] : [card.media];
    const pairs = part.images.map((src, i) => el("div", { class: "pair" }, [
      inputs[i] ? el("figure", {}, [
        el("img", { class: "enhance-input", src: inputs[i], alt: "input" }), el("figcaption", { text: "input" }),
      ]) : null,
      el("figure", {}, [
        el("img", { class: "enhanced", src, alt: `enhanced x${part.scale}`, "data-scale": part.scale }),
        el("figcaption", { text: `×${part.scale}` }),
      ]),
    ]));
    const what = `${part.source}${part.category ? ` (${part.category})` : ""} ×${part.scale} → ${part.width}×${part.height}`;
    return [el("div", { class: "meta", text: what }), ...pairs, leftOut(part)];
  },
  objects(part, card) {
    // The upload's image with each box drawn where the detector found it (boxes are in the
    // upload's pixels: placed in percent of its width and height).
    const frame = el("div", { class: "detections" }, [
      card.media ? el("img", { class: "detected-image", src: card.media, alt: `upload ${card.key}` }) : null,
    ]);
    frame.style.aspectRatio = `${part.width} / ${part.height}`;
    const rows = part.objects.map((o, i) => {
      const [x0, y0, x1, y1] = o.box;
      const box = el("div", { class: o.rejected ? "box rejected-box" : "box" }, [
        el("span", { class: "box-label", text: `${i + 1} ${o.rejected ? "rejected" : o.label}` }),
      ]);
      Object.assign(box.style, {
        left: `${(100 * x0) / part.width}%`, top: `${(100 * y0) / part.height}%`,
        width: `${(100 * (x1 - x0)) / part.width}%`, height: `${(100 * (y1 - y0)) / part.height}%`,
      });
      frame.append(box);
      const said = o.rejected ? `rejected (${o.label} ${percent(o.score)}): ${o.reason || "no reason given"}` : `${o.label} ${percent(o.score)}`;
      return el("li", { class: o.rejected ? "rejected" : null, text: said });
    });
    const count = part.found > part.objects.length ? `${part.found} objects, first ${part.objects.length} shown` : `${part.found} objects`;
    return [frame, el("div", { class: "meta", text: count }), el("ol", { class: "objects" }, rows)];
  },
  transcript(part) {
    const text = part.rejected
      ? el("div", { class: "rejected", text: `rejected: ${part.reason}` })
      : el("div", { class: "transcript-text", text: `“${part.text}”` });
    return [text, el("div", { class: "meta", text: `confidence ${part.confidence} · ${part.duration_s} s` })];
  },
  translation(part) {
    const rows = Object.entries(part.fields).map(([name, text]) => el("div", { class: "translated" }, [
      el("span", { class: "field", text: `${name}: ` }), el("span", { text }),
    ]));
    const how = `${part.source_language || "?"} → ${part.target_language || "?"} · ${part.backend || ""}`;
    return [...rows, el("div", { class: "meta", text: how + (part.truncated ? " · truncated" : "") })];
  },
  recommendations(part) {
    const items = el("ol", { class: "items" }, part.items.map((i) => el("li", { text: `${i.item} (${i.score})` })));
    const meta = `${part.source}${part.unknown_items ? ` · ${part.unknown_items} unknown items` : ""}`;
    return [el("div", { class: "meta", text: meta }), items];
  },
};

const KIND_ORDER = ["tags", "objects", "artwork", "enhance", "transcript", "translation", "recommendations"];

function kindOrder(kind) {
  const at = KIND_ORDER.indexOf(kind);
  return at < 0 ? KIND_ORDER.length : at;
}

function renderPart(kind, part, card) {
  const render = renderers[kind] || ((p) => [el("pre", { text: p.json })]);
  return el("div", { class: `part part-${kind}`, "data-kind": kind, "data-plugin": part.plugin, "data-source": part.source },
    [el("h4", { text: kind }), ...render(part, card), footer(part)]);
}

function uploadImage(card) {
  const image = el("img", { class: "upload-image", src: card.media, alt: `upload ${card.key}` });
  image.addEventListener("error", () => image.replaceWith(el("div", { class: "rejected", text: "the image does not decode" })));
  return image;
}

function renderCard(card) {
  const title = {
    uploads: `upload ${card.key}`, audio: `audio ${card.key}`, users: `user ${card.id}`, other: card.id,
  }[card.section];
  const children = [el("h3", { text: title }), el("div", { class: "meta", text: `event ${card.event_id}` })];
  if (card.media && card.section === "uploads") children.push(uploadImage(card));
  if (card.media && card.section === "audio") children.push(el("audio", { controls: "", preload: "none", src: card.media }));
  const kinds = Object.keys(card.parts).sort((a, b) => kindOrder(a) - kindOrder(b) || a.localeCompare(b));
  for (const kind of kinds) children.push(renderPart(kind, card.parts[kind], card));
  if (card.history && card.history.length) {
    children.push(el("div", { class: "history" }, [
      el("h4", { text: "recent history" }),
      el("ul", {}, card.history.map((h) => el("li", { text: `${h.item} (weight ${h.weight})` }))),
    ]));
  }
  return el("article", { class: "card", "data-card-id": card.id, "data-section": card.section }, children);
}

function trim(list, limit) {
  while (list.children.length > limit) list.lastElementChild.remove();
}

function sparkline(counts) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const max = Math.max(1, ...counts);
  svg.setAttribute("viewBox", `0 0 ${counts.length * 4} 20`);
  svg.setAttribute("class", "spark");
  counts.forEach((count, i) => {
    const bar = document.createElementNS(ns, "rect");
    const h = (20 * count) / max;
    bar.setAttribute("x", i * 4);
    bar.setAttribute("y", 20 - h);
    bar.setAttribute("width", 3);
    bar.setAttribute("height", h);
    svg.append(bar);
  });
  return svg;
}

function ms(value) {
  return value === null ? "–" : `${value} ms`;
}

function renderStats(update) {
  const rows = update.stats.map((s) => el("tr", { "data-plugin": s.plugin }, [
    el("td", { text: s.plugin }), el("td", { text: s.per_s_last_minute }), el("td", {}, [sparkline(s.counts)]),
    el("td", { text: s.results_window }), el("td", { text: ms(s.latency_p50_ms) }), el("td", { text: ms(s.latency_p95_ms) }),
  ]));
  document.getElementById("stats-rows").replaceChildren(...rows);
  const sources = Object.entries(update.sources).map(([name, status]) => el("li", { text: `${name}: ${status}` }));
  document.getElementById("sources").replaceChildren(...sources);
  document.getElementById("results-read").textContent = `${update.results_read} results read`;
}

function renderDeadLetter(d) {
  const when = d.refused_ts ? new Date(d.refused_ts).toLocaleTimeString() : "";
  return el("tr", { class: "dead-letter", "data-stage": d.stage }, [
    el("td", { text: when }), el("td", { text: d.stage }), el("td", { text: d.plugin || "–" }),
    el("td", { text: `${d.event_type || "?"} ${d.event_id || "(no id)"}` }), el("td", { class: "reason", text: d.reason }),
  ]);
}

function apply() {
  scheduled = false;
  const started = performance.now();
  const updates = pending;
  pending = [];
  const cards = new Map();
  const letters = [];
  for (const update of updates) {
    for (const card of update.cards) cards.set(`${card.section}/${card.id}`, card);
    letters.push(...update.dead_letters);
  }
  const last = updates[updates.length - 1];
  for (const card of [...cards.values()].sort((a, b) => a.seq - b.seq)) {
    const list = document.getElementById(`section-${card.section}`);
    const old = list.querySelector(`:scope > [data-card-id="${CSS.escape(card.id)}"]`);
    if (old) old.remove();
    list.prepend(renderCard(card));
  }
  for (const [section, limit] of Object.entries(last.limits)) {
    const list = document.getElementById(section === "dead_letters" ? "dead-letter-rows" : `section-${section}`);
    if (section === "dead_letters" && letters.length) list.prepend(...letters.slice(-limit).reverse().map(renderDeadLetter));
    if (list) trim(list, limit);
  }
  renderStats(last);
  ui.updates += updates.length;
  ui.frames += 1;
  ui.lastApplyMs = performance.now() - started;
  ui.maxApplyMs = Math.max(ui.maxApplyMs, ui.lastApplyMs);
}

const events = new EventSource("/events");
const status = () => document.getElementById("status");
events.onopen = () => { status().textContent = "live"; status().className = "status live"; };
events.onerror = () => { status().textContent = "reconnecting…"; status().className = "status down"; };
events.addEventListener("update", (event) => {
  pending.push(JSON.parse(event.data));
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(apply);
  }
});
