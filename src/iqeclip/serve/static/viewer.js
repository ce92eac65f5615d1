// The iqeclip viewer: upload a scan to POST /api/predict and show what predict wrote.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;
let result = null;

function fmt(x) {
  return x === null || x === undefined ? "–" : x.toFixed(4);
}

function setDecision(element, decision) {
  element.textContent = decision || "none (not calibrated)";
  element.className = decision || "";
}

async function loadModel() {
  const response = await fetch("/api/model");
  model = await response.json();
  const c = model.config;
  const calibration = model.calibration
    ? `calibrated: ${model.calibration.rule}`
    : "not calibrated: scores only (iqeclip calibrate sets a threshold)";
  $("model").textContent =
    `${model.source} · ${c.model_name} at ${c.img_size} px · ${model.setting}-shot rule · ` +
    `${model.backend} · iqeclip ${model.version} · ${calibration}`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "";
}

async function upload(file) {
  $("error").hidden = true;
  $("result").hidden = true;
  $("stage").dataset.ready = "false";
  $("status").textContent = `scoring ${file.name}…`;
  const form = new FormData();
  form.append("file", file, file.name);
  let response;
  try {
    response = await fetch("/api/predict", { method: "POST", body: form });
  } catch (err) {
    showError(`the server did not answer (${err})`);
    return;
  }
  const answer = await response.json();
  if (!response.ok) {
    showError(`error: ${answer.error}`);
    return;
  }
  result = answer;
  render();
}

function render() {
  const [low, high] = model.score_range;
  $("score").textContent = fmt(result.score);
  $("score").dataset.value = result.score;
  $("score-note").textContent =
    `image score of the ${model.setting}-shot rule, in [${low}, ${high}]; ` +
    "the map is the anomaly probability of each pixel, in [0, 1]";
  setDecision($("decision"), result.decision);
  $("threshold-note").textContent =
    result.threshold === null ? "" : `abnormal when score ≥ ${fmt(result.threshold)}`;
  const volume = result.volumes.length === 1 ? result.volumes[0] : null;
  $("volume").hidden = volume === null;
  $("slice-control").hidden = result.slices.length < 2;
  $("slice").max = result.slices.length - 1;
  let start = 0;
  if (volume) {
    $("volume-score").textContent = fmt(volume.score);
    setDecision($("volume-decision"), volume.decision);
    start = result.slices.reduce((best, s, i, all) => (s.score > all[best].score ? i : best), 0);
  }
  $("slice").value = start;
  $("download").href = result.download;
  showDicom(result.dicom || []);
  $("status").textContent = `${result.filename}: ${result.slices.length} slice(s) scored`;
  $("result").hidden = false;
  showSlice(start);
}

// a DICOM series' Segmentation and Parametric Map, for a PACS viewer
function showDicom(files) {
  const where = $("dicom");
  where.replaceChildren();
  where.hidden = files.length === 0;
  if (files.length === 0) return;
  where.append("for a PACS viewer: ");
  files.forEach((f, i) => {
    const link = document.createElement("a");
    link.href = f.url;
    link.download = f.name;
    link.textContent =
      f.kind === "dicom-seg" ? "DICOM Segmentation (mask)" : "DICOM Parametric Map (probability)";
    if (i > 0) where.append(", ");
    where.append(link);
  });
}

function showSlice(i) {
  const s = result.slices[i];
  const stage = $("stage");
  stage.dataset.ready = "false";
  let waiting = s.contour ? 3 : 2;
  const loaded = () => {
    waiting -= 1;
    if (waiting === 0) stage.dataset.ready = "true";
  };
  for (const [id, src] of [["base", s.input], ["heat", s.heat], ["contour", s.contour]]) {
    const img = $(id);
    img.hidden = !src;
    if (src) {
      img.onload = loaded;
      img.src = src;
    }
  }
  $("heat").style.opacity = $("opacity").value;
  const n = result.slices.length;
  const label = s.index === null ? s.path : `slice ${s.index} (${i + 1} of ${n})`;
  $("slice-label").textContent =
    `${label}: score ${fmt(s.score)}${s.decision ? `, ${s.decision}` : ""}`;
  if (result.volumes.length === 1) plot(i);
}

function plot(current) {
  const svg = $("plot");
  const w = svg.width.baseVal.value;
  const h = svg.height.baseVal.value;
  const scores = result.slices.map((s) => s.score);
  const threshold = result.slices[0].threshold;
  const values = threshold === null ? scores : [...scores, threshold];
  const low = Math.min(...values);
  const span = Math.max(...values) - low || 1;
  const x = (i) => 50 + (i * (w - 60)) / Math.max(1, scores.length - 1);
  const y = (v) => h - 15 - ((v - low) * (h - 30)) / span;
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  for (const v of [low, low + span]) {
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", 4);
    label.setAttribute("y", y(v) + 4);
    label.setAttribute("font-size", 10);
    label.textContent = v.toFixed(3);
    svg.append(label);
  }
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", scores.map((v, i) => `${x(i)},${y(v)}`).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#36c");
  svg.append(line);
  if (threshold !== null) {
    const t = document.createElementNS(ns, "line");
    for (const [k, v] of [["x1", 50], ["x2", w - 10], ["y1", y(threshold)], ["y2", y(threshold)]]) {
      t.setAttribute(k, v);
    }
    t.setAttribute("stroke", "#b00");
    t.setAttribute("stroke-dasharray", "4 3");
    svg.append(t);
  }
  const dot = document.createElementNS(ns, "circle");
  dot.setAttribute("cx", x(current));
  dot.setAttribute("cy", y(scores[current]));
  dot.setAttribute("r", 4);
  dot.setAttribute("fill", "#b00");
  svg.append(dot);
}

window.addEventListener("DOMContentLoaded", () => {
  loadModel().catch((err) => showError(`cannot read /api/model (${err})`));
  $("file").addEventListener("change", (e) => e.target.files[0] && upload(e.target.files[0]));
  $("opacity").addEventListener("input", (e) => ($("heat").style.opacity = e.target.value));
  $("slice").addEventListener("input", (e) => showSlice(Number(e.target.value)));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]);
  });
});
