// The web page of `geosleuth serve`: photos in (drop, paste, pick, or a URL), answers out.
//
// It only calls the HTTP API: POST /v1/jobs (the photos of one drop in one job, each photo its own
// item, so a corrupt one fails alone), GET /v1/jobs/{id} for each photo's progress, GET
// /v1/predictions/{id} for an answer and /map for the report's map of it, and the chat endpoints
// for questions (the answer streams as server-sent events).
//
// Everything shown comes from a photo, a model or a user and is untrusted: text is set with
// textContent and elements are built with DOM calls, never from markup. The page's
// Content-Security-Policy requires Trusted Types, so a markup sink would throw, not render.

const API = "/v1";
const POLL_MS = 600;
const MAX_ALTERNATIVES = 6;
const MAX_ATTEMPTS = 5; // for a busy (503) or rate-limited (429) server
const KEY_STORE = "geosleuth-api-key";
const LEVEL_TEXT = { high: "high", medium: "medium", low: "low", none: "none" };

const $ = (id) => document.getElementById(id);
const photos = []; // every photo entry, in the order they were added
let selected = null;
let nextNumber = 1;

class ApiError extends Error {
  constructor(type, message, status) {
    super(message);
    this.type = type;
    this.status = status;
  }
}

// --- small DOM helpers: text only --------------------------------------------------------------

function el(tag, options = {}, ...children) {
  const node = document.createElement(tag);
  if (options.className) node.className = options.className;
  if (options.text !== undefined) node.textContent = String(options.text);
  for (const [name, value] of Object.entries(options.attrs || {})) node.setAttribute(name, String(value));
  for (const child of children) if (child) node.append(child);
  return node;
}

function clear(node) {
  node.replaceChildren();
}

function placeName(place) {
  // Place.short() of the Python side: name, region (when it differs), country
  const parts = [place.name];
  if (place.admin1 && place.admin1 !== place.name) parts.push(place.admin1);
  parts.push(place.country);
  return parts.join(", ");
}

function candidateName(c) {
  return c.place ? placeName(c.place) : c.label;
}

function km(value) {
  return `${Math.max(1, Math.round(value)).toLocaleString("en")} km`;
}

function safeId(id) {
  // ids come from our server, but they still go into URLs only when they look like ids
  if (typeof id !== "string" || !/^[A-Za-z0-9_-]{1,128}$/.test(id)) throw new ApiError("InternalError", `unexpected id ${id}`, 0);
  return id;
}

// --- the API -----------------------------------------------------------------------------------

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorOf(response) {
  let type = "HTTPError";
  let message = `the server answered ${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) ({ type, message } = body.error);
  } catch (_) {
    // not the error shape: keep the status line
  }
  if (response.status === 401) $("key-row").hidden = false;
  return new ApiError(type, message, response.status);
}

async function call(path, { method = "GET", json } = {}) {
  const init = { method, headers: authHeaders() };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError("NetworkError", `the server could not be reached (${e.message})`, 0);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function getJSON(path) {
  return (await call(path)).json();
}

function retryAfter(error) {
  return error.status === 429 || error.status === 503;
}

function sleep(ms) {
  return new Promise((done) => setTimeout(done, ms));
}

// A multipart upload with progress (fetch has no upload progress).
function uploadForm(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject(new ApiError("NetworkError", "the server could not be reached", 0));
    xhr.onload = () => {
      const body = xhr.response;
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
      if (xhr.status === 401) $("key-row").hidden = false;
      const err = body && body.error ? body.error : { type: "HTTPError", message: `the server answered ${xhr.status}` };
      reject(new ApiError(err.type, err.message, xhr.status));
    };
    xhr.send(form);
  });
}

// --- photos and their progress -----------------------------------------------------------------

function newEntry(name, file) {
  const entry = {
    number: nextNumber++,
    name,
    status: "pending",
    started: null,
    predictionId: null,
    prediction: null,
    error: null,
    maps: {},
    chat: { session: null, turns: [], busy: false },
  };
  // a placeholder, replaced by the photo when the browser can show it (not HEIC, not a corrupt file)
  const thumb = el("div", { className: "thumb", attrs: { "aria-hidden": "true" } });
  if (file) {
    const img = el("img", { className: "thumb", attrs: { alt: "" } });
    img.addEventListener("load", () => thumb.replaceWith(img), { once: true });
    img.src = URL.createObjectURL(file);
  }
  const nameNode = el("div", { className: "name", text: name, attrs: { title: name } });
  const state = el("div", { className: "state", attrs: { "data-testid": "photo-state" } });
  const bar = el("progress", { attrs: { max: "1" } });
  const button = el(
    "button",
    { className: "photo", attrs: { type: "button", "data-testid": "photo", "aria-current": "false" } },
    thumb,
    el("div", {}, nameNode, state, bar),
  );
  button.addEventListener("click", () => {
    select(entry);
    const result = $("result");
    // one column (a phone): the answer is below the list, bring it into view
    if (!result.hidden && result.getBoundingClientRect().top > window.innerHeight) result.scrollIntoView({ block: "start" });
  });
  entry.card = { button, state, bar };
  $("photos").append(el("li", {}, button));
  photos.push(entry);
  setStatus(entry, "pending");
  return entry;
}

const STATE_TEXT = {
  pending: () => "waiting to upload",
  uploading: (e) => `uploading ${Math.round((e.progress || 0) * 100)}%`,
  waiting: () => "waiting for a worker",
  locating: (e) => `locating… ${e.started ? Math.round((Date.now() - e.started) / 1000) : 0} s`,
  done: (e) => answerLine(e.prediction),
  failed: (e) => e.error,
};

function answerLine(prediction) {
  if (!prediction) return "located";
  if (!prediction.best) return "too little evidence";
  return `${candidateName(prediction.best)} · ${prediction.confidence_level}`;
}

function setStatus(entry, status, extra = {}) {
  Object.assign(entry, extra, { status });
  if (status === "locating" && !entry.started) entry.started = Date.now();
  const { button, state, bar } = entry.card;
  button.dataset.status = status;
  button.classList.toggle("failed", status === "failed");
  button.classList.toggle("done", status === "done");
  state.textContent = STATE_TEXT[status](entry);
  bar.hidden = status === "done" || status === "failed";
  if (status === "uploading") bar.value = entry.progress || 0;
  else if (status === "pending") bar.value = 0;
  else bar.removeAttribute("value"); // indeterminate while the server works
}

setInterval(() => {
  for (const e of photos) if (e.status === "locating") e.card.state.textContent = STATE_TEXT.locating(e);
}, 1000);

function addFiles(files) {
  const list = [...files];
  if (!list.length) return;
  const entries = list.map((f) => newEntry(f.name || "pasted photo", f));
  if (!selected) select(entries[0]);
  submitFiles(list, entries);
}

function addUrl(url) {
  const trimmed = url.trim();
  if (!/^https?:\/\/\S+$/i.test(trimmed)) {
    showIntakeError(`"${trimmed.slice(0, 200)}" is not an http(s) URL`);
    return;
  }
  showIntakeError(null);
  const entry = newEntry(trimmed.split("?")[0].slice(0, 300));
  if (!selected) select(entry);
  setStatus(entry, "waiting");
  call(`${API}/jobs`, { method: "POST", json: { urls: [trimmed] } })
    .then((r) => r.json())
    .then((job) => follow(job, [entry]))
    .catch((err) => fail([entry], err));
}

async function submitFiles(files, entries, attempt = 1) {
  const form = new FormData();
  files.forEach((f, i) => form.append("image", f, f.name || `pasted-${entries[i].number}.png`));
  for (const e of entries) setStatus(e, "uploading", { progress: 0 });
  try {
    const job = await uploadForm(`${API}/jobs`, form, (share) => {
      for (const e of entries) if (e.status === "uploading") setStatus(e, "uploading", { progress: share });
    });
    for (const e of entries) setStatus(e, "waiting");
    await follow(job, entries);
  } catch (err) {
    if (entries.length > 1 && (err.status === 413 || err.status === 400)) {
      // a photo too large (or too many at once) refuses the whole job: send each half alone,
      // so in the end only the photo at fault fails
      const half = Math.ceil(files.length / 2);
      submitFiles(files.slice(0, half), entries.slice(0, half));
      submitFiles(files.slice(half), entries.slice(half));
      return;
    }
    if (retryAfter(err) && attempt < MAX_ATTEMPTS) {
      await sleep(1000 * attempt);
      return submitFiles(files, entries, attempt + 1);
    }
    fail(entries, err);
  }
}

function fail(entries, err) {
  for (const e of entries) setStatus(e, "failed", { error: err.message, errorType: err.type });
  refreshSelected();
}

async function follow(job, entries) {
  const id = safeId(job.id);
  for (;;) {
    let status;
    try {
      status = await getJSON(`${API}/jobs/${id}`);
    } catch (err) {
      if (retryAfter(err)) {
        await sleep(1000);
        continue;
      }
      return fail(entries.filter((e) => e.status !== "done"), err);
    }
    for (const item of status.items) {
      const entry = entries[item.index];
      if (!entry || entry.predictionId || entry.status === "failed") continue;
      if (item.status === "running") setStatus(entry, "locating");
      else if (item.status === "failed") {
        setStatus(entry, "failed", { error: item.error || "this photo could not be located" });
        refreshSelected();
      } else if (item.status === "done" && item.prediction_id) {
        entry.predictionId = safeId(item.prediction_id);
        setStatus(entry, "locating");
        loadPrediction(entry);
      }
    }
    if (status.status === "done") return;
    await sleep(POLL_MS);
  }
}

async function loadPrediction(entry) {
  try {
    const prediction = await getJSON(`${API}/predictions/${entry.predictionId}`);
    setStatus(entry, "done", { prediction });
    if (!selected || selected.status !== "done" || selected === entry) select(entry);
  } catch (err) {
    fail([entry], err);
  }
}

function showIntakeError(message) {
  const node = $("intake-error");
  node.hidden = !message;
  node.textContent = message || "";
}

// --- the answer --------------------------------------------------------------------------------

function select(entry) {
  selected = entry;
  for (const e of photos) e.card.button.setAttribute("aria-current", String(e === entry));
  refreshSelected();
}

function refreshSelected() {
  const entry = selected;
  const result = $("result");
  if (!entry || entry.status !== "done") {
    result.hidden = true;
    return;
  }
  result.hidden = false;
  result.dataset.prediction = entry.predictionId;
  showAnswer(entry.prediction, entry.predictionId);
  showMap(entry, "answer");
  showAlternatives(entry.prediction);
  showEvidence(entry.prediction);
  showNotes(entry.prediction);
  showChat(entry);
}

function showAnswer(p, pid) {
  const best = p.best;
  const panel = document.querySelector(".answer");
  panel.classList.toggle("none", !best);
  $("answer-place").textContent = best ? candidateName(best) : "Too little evidence";
  $("answer-coords").textContent = best ? `${best.point.lat.toFixed(5)}, ${best.point.lon.toFixed(5)}` : "";
  $("answer-basis").textContent = best
    ? `From ${p.basis === "exif-gps" ? "the GPS position in the photo's metadata" : "the evidence"}; within about ${km(best.radius_km)}.`
    : "geosleuth does not commit to a place: no candidate reached the minimum probability.";
  const levels = (p.regions || []).map((r) => `${Math.round(r.level * 100)}%`);
  $("answer-regions").textContent = levels.length ? `Confidence regions (${levels.join(" / ")}) are drawn on the map.` : "";
  const level = $("answer-level");
  level.className = `level ${p.confidence_level}`;
  level.textContent = LEVEL_TEXT[p.confidence_level] || p.confidence_level;
  $("answer-p").textContent = `p = ${p.confidence.toFixed(2)}`;
  $("answer-explanation").textContent = p.explanation || "";
  $("report-link").href = `${API}/predictions/${pid}/report`;
}

async function showMap(entry, view) {
  for (const b of document.querySelectorAll(".map-controls button")) {
    b.setAttribute("aria-pressed", String(b.dataset.view === view));
  }
  const img = $("map");
  const status = $("map-status");
  img.dataset.view = view;
  img.dataset.loaded = "false";
  status.textContent = "drawing the map…";
  try {
    if (!entry.maps[view]) {
      const response = await call(`${API}/predictions/${entry.predictionId}/map?view=${view}`);
      entry.maps[view] = URL.createObjectURL(await response.blob());
    }
    if (selected !== entry || img.dataset.view !== view) return; // the user moved on meanwhile
    img.addEventListener(
      "load",
      () => {
        img.dataset.loaded = "true";
        status.textContent = "";
      },
      { once: true },
    );
    img.src = entry.maps[view];
  } catch (err) {
    if (selected === entry) status.textContent = `no map: ${err.message}`;
  }
}

function showAlternatives(p) {
  const body = $("alternatives").tBodies[0];
  clear(body);
  const best = p.best;
  const others = p.candidates.filter(
    (c) => !best || (c.point.lat !== best.point.lat || c.point.lon !== best.point.lon),
  );
  others.slice(0, MAX_ALTERNATIVES).forEach((c, i) => {
    // as the report's hypotheses: what the candidate stands for, then the place nearest its point
    const name = el("td", { text: c.label });
    if (c.place && c.label !== placeName(c.place)) name.append(el("div", { className: "small muted", text: placeName(c.place) }));
    body.append(
      el(
        "tr",
        { attrs: { "data-testid": "alternative" } },
        el("td", { text: i + 2 }),
        name,
        el("td", { className: "num", text: c.probability.toFixed(3) }),
        el("td", { className: "num", text: km(c.radius_km) }),
      ),
    );
  });
  if (others.length > MAX_ALTERNATIVES) {
    const more = `${others.length - MAX_ALTERNATIVES} more in the full report`;
    body.append(el("tr", {}, el("td"), el("td", { className: "small muted", text: more, attrs: { colspan: "3" } })));
  }
  $("alternatives").hidden = others.length === 0;
  $("no-alternatives").hidden = others.length > 0;
}

function showEvidence(p) {
  const body = $("evidence").tBodies[0];
  clear(body);
  for (const e of p.evidence) {
    const value = el("td", { text: e.value });
    if (e.reason) value.append(" ", el("span", { className: "muted small", text: `(${e.reason})` }));
    const row = el(
      "tr",
      { attrs: { "data-testid": "evidence-row", id: `ev-${e.id}` } },
      el("td", { className: "mono id", text: e.id }),
      value,
      el("td", { className: "num", text: e.weight.toFixed(2) }),
    );
    if (!e.usable || e.weight <= 0) row.className = "unused";
    body.append(row);
  }
  $("evidence").hidden = p.evidence.length === 0;
  $("no-evidence").hidden = p.evidence.length > 0;
}

function showNotes(p) {
  const notes = $("notes");
  clear(notes);
  for (const [title, items] of [["Warnings", p.warnings || []], ["Looked for and not found", p.missing || []]]) {
    if (!items.length) continue;
    notes.append(el("p", {}, el("strong", { text: `${title}: ` }), items.join(" · ")));
  }
}

// --- chat --------------------------------------------------------------------------------------

function showChat(entry) {
  const log = $("chat-log");
  clear(log);
  for (const turn of entry.chat.turns) log.append(turnNodes(turn));
  $("chat-send").disabled = entry.chat.busy;
}

function turnNodes(turn) {
  const frag = document.createDocumentFragment();
  frag.append(el("li", { className: "q", text: turn.question }));
  const answer = el("li", { className: "a", attrs: { "data-testid": "chat-answer" } });
  turn.node = answer;
  renderAnswer(turn);
  frag.append(answer);
  return frag;
}

function renderAnswer(turn) {
  const node = turn.node;
  if (!node) return;
  node.classList.toggle("failed", Boolean(turn.error));
  node.dataset.state = turn.error ? "failed" : turn.done ? "done" : "streaming";
  node.textContent = turn.error ? turn.error : turn.answer || "…";
  if (turn.cited && turn.cited.length) node.append(el("span", { className: "cited", text: `cited: ${turn.cited.join(", ")}` }));
}

async function ask(entry, question) {
  const turn = { question, answer: "", cited: [], done: false, error: null, node: null };
  entry.chat.turns.push(turn);
  entry.chat.busy = true;
  if (selected === entry) {
    $("chat-log").append(turnNodes(turn));
    $("chat-send").disabled = true;
  }
  try {
    if (!entry.chat.session) {
      const made = await (await call(`${API}/chat`, { method: "POST", json: { prediction_id: entry.predictionId } })).json();
      entry.chat.session = safeId(made.session);
    }
    const response = await call(`${API}/chat/${entry.chat.session}/messages`, { method: "POST", json: { question } });
    await readEvents(response, (event, data) => {
      if (event === "delta") turn.answer += data.text;
      else if (event === "turn") Object.assign(turn, { answer: data.answer, cited: data.cited_evidence || [], done: true });
      else if (event === "error") turn.error = `${data.error.message} (${data.error.type})`;
      renderAnswer(turn);
    });
    if (!turn.done && !turn.error) turn.error = "the answer stopped before it was complete";
  } catch (err) {
    turn.error = `${err.message} (${err.type})`;
  }
  entry.chat.busy = false;
  renderAnswer(turn);
  if (selected === entry) {
    $("chat-send").disabled = false;
    const log = $("chat-log");
    log.scrollTop = log.scrollHeight;
  }
}

// Server-sent events over a POST (EventSource only does GET): "event: x\ndata: {json}\n\n".
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}

// --- wiring ------------------------------------------------------------------------------------

function isTyping(target) {
  return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement;
}

function init() {
  const drop = $("drop");
  $("file-input").addEventListener("change", (e) => {
    addFiles(e.target.files);
    e.target.value = "";
  });
  // a photo dropped anywhere is ours; the browser must not navigate to it
  for (const type of ["dragover", "drop"]) document.addEventListener(type, (e) => e.preventDefault());
  drop.addEventListener("dragenter", () => drop.classList.add("over"));
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  document.addEventListener("drop", (e) => {
    drop.classList.remove("over");
    const dt = e.dataTransfer;
    if (!dt) return;
    if (dt.files.length) addFiles(dt.files);
    else {
      const url = (dt.getData("text/uri-list") || dt.getData("text/plain") || "").split("\n")[0];
      if (url) addUrl(url);
    }
  });
  document.addEventListener("paste", (e) => {
    const dt = e.clipboardData;
    if (!dt) return;
    if (dt.files.length) {
      e.preventDefault();
      addFiles(dt.files);
      return;
    }
    if (isTyping(e.target)) return; // pasting into a field: the field's own paste
    const text = dt.getData("text/plain").trim();
    if (/^https?:\/\//i.test(text)) {
      e.preventDefault();
      addUrl(text);
    }
  });
  $("url-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("url-input");
    if (input.value.trim()) addUrl(input.value);
    input.value = "";
  });
  for (const b of document.querySelectorAll(".map-controls button")) {
    b.addEventListener("click", () => selected && selected.status === "done" && showMap(selected, b.dataset.view));
  }
  $("chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("chat-input");
    const question = input.value.trim();
    if (!question || !selected || selected.status !== "done" || selected.chat.busy) return;
    input.value = "";
    ask(selected, question);
  });
  $("key-save").addEventListener("click", () => {
    const key = $("key-input").value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
    $("key-input").value = "";
    $("key-row").hidden = true;
  });
  document.body.dataset.ready = "true";
}

init();
