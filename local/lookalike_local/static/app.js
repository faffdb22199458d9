// Lookalike search page: talks to the query API (POST /search, GET /products/{id}/similar,
// GET /products/{id}) and to the local stack's helpers (/thumbnails, /upload, /local/...).
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { catalogue: [], selectedProduct: null, lastQuery: null, request: 0 };

// Every search takes a ticket; an answer whose ticket is no longer the newest is dropped, so a
// slow answer (or its error) never lands on top of a newer search's results.
function newRequest() {
  state.request += 1;
  return state.request;
}
const isCurrent = (ticket) => ticket === state.request;

function thumbnailUrl(row) {
  if (row.thumbnail_url) return row.thumbnail_url;
  if (row.key) return "/thumbnails/" + row.key.split("/").map(encodeURIComponent).join("/") + "?size=256";
  return "";
}

// The rows of a search response: a list, or the first list under a results-like key.
function resultRows(payload) {
  if (Array.isArray(payload)) return payload;
  for (const key of ["results", "neighbours", "neighbors", "matches", "items"]) {
    if (payload && Array.isArray(payload[key])) return payload[key];
  }
  return [];
}

function similarityOf(row) {
  if (typeof row.similarity === "number") return row.similarity;
  if (typeof row.distance === "number") return 1 - row.distance;
  return null;
}

function setMessage(text, isError = false) {
  const message = $("#message");
  message.textContent = text;
  message.classList.toggle("error", isError);
}

function searchParams() {
  const params = new URLSearchParams({ k: $("#k-select").value });
  const category = $("#category-filter").value;
  if (category) params.set("category", category);
  return params;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.message || body.error || JSON.stringify(body);
  } catch {
    return response.statusText;
  }
}

// Match levels in plain words (the API's `match`, from the answering model's calibrated cut-offs).
const MATCH_WORDS = {
  duplicate: ["Same photo", "the same photo, edited (cropped, resized, recoloured…)"],
  very_similar: ["Very similar", "very likely the same kind of product"],
  similar: ["Similar", "often the same kind of product"],
  weak: ["Weak match", "probably not what you are looking for"],
};

// A model without calibrated levels answers match null: its cards show the similarity alone.
function matchBadge(row, cutoffs) {
  const words = MATCH_WORDS[row.match];
  if (!words) return null;
  const badge = document.createElement("span");
  badge.className = `match match-${row.match}`;
  badge.textContent = words[0];
  const floor = cutoffs && row.match !== "weak" ? cutoffs[row.match] : null;
  badge.title = `${words[0]}: ${words[1]}` +
    (floor != null ? ` (similarity ≥ ${(floor * 100).toFixed(0)}% for this model)` : "");
  return badge;
}

function renderCard(row, index, cutoffs) {
  const card = document.createElement("article");
  card.className = "card result" + (index === 0 ? " top" : "") + (row.match === "weak" ? " weak" : "");
  card.title = `${row.product_id} — click to find products similar to this one`;
  const img = document.createElement("img");
  img.src = thumbnailUrl(row);
  img.alt = row.product_id;
  const body = document.createElement("div");
  body.className = "body";
  const similarity = similarityOf(row);
  const percent = similarity === null ? null : Math.max(0, Math.min(100, similarity * 100));
  body.innerHTML = `
    <div class="product"></div>
    <div class="category"></div>
    <div class="similarity"><span class="bar"><span></span></span><span class="value"></span></div>`;
  body.querySelector(".product").textContent = row.product_id;
  body.querySelector(".category").textContent = row.category || "uncategorised";
  body.querySelector(".bar > span").style.width = `${percent ?? 0}%`;
  body.querySelector(".value").textContent = percent === null ? "–" : `${percent.toFixed(1)}%`;
  const badge = matchBadge(row, cutoffs);
  if (badge) body.prepend(badge);
  card.append(img, body);
  card.addEventListener("click", () => findSimilar(row.product_id));
  return card;
}

// Weak matches are folded behind "show more": twelve cards that all look like answers say less
// than three real ones.
function renderResults(rows, title, cutoffs = null, suggestions = []) {
  $("#results-title").textContent = title;
  showSuggestion(suggestions);
  const grid = $("#results");
  grid.replaceChildren();
  const weak = rows.filter((row) => row.match === "weak");
  rows.forEach((row, index) => {
    const card = renderCard(row, index, cutoffs);
    if (row.match === "weak") card.hidden = true;
    grid.append(card);
  });
  const more = $("#show-weak");
  more.hidden = weak.length === 0;
  more.setAttribute("aria-expanded", "false");
  more.textContent = `Show ${weak.length} weak ${weak.length === 1 ? "match" : "matches"}`;
  if (rows.length === 0) setMessage("No similar products found (try another category).");
  else if (weak.length === rows.length) setMessage("No close matches: only weak ones, folded below.");
}

// The photo's suggested categories (a vote of its nearest categorised products): what a shop
// would file it under. Only a search by photo has them.
function showSuggestion(suggestions = []) {
  const line = $("#suggestion");
  const [best, second] = suggestions;
  line.hidden = !best;
  if (!best) return;
  const percent = Math.round(best.confidence * 100);
  line.textContent = best.confident
    ? `Looks like: ${best.category} (${percent} % of the closest products)`
    : `Might be: ${best.category}${second ? ` or ${second.category}` : ""} (not sure)`;
}

function toggleWeak() {
  const more = $("#show-weak");
  const unfold = more.getAttribute("aria-expanded") !== "true";
  document.querySelectorAll("#results .card.weak").forEach((card) => { card.hidden = !unfold; });
  const count = document.querySelectorAll("#results .card.weak").length;
  more.setAttribute("aria-expanded", String(unfold));
  more.textContent = unfold ? "Hide weak matches" : `Show ${count} weak ${count === 1 ? "match" : "matches"}`;
}

function resultsMeta(rows, started) {
  const close = rows.filter((row) => row.match && row.match !== "weak").length;
  const rated = rows.some((row) => row.match);
  const counts = rated ? `${close} close · ${rows.length - close} weak` : `${rows.length} results`;
  return `${counts} · ${Math.round(performance.now() - started)} ms`;
}

// API Gateway and Lambda take 6 MB per request, the photo base64-encoded (4/3 of its size) included.
const MAX_REQUEST_PHOTO_BYTES = 4.5e6;

async function searchWithFile(file) {
  if (!file) return;
  const ticket = newRequest();
  state.lastQuery = { kind: "photo", file };
  const preview = $("#query-preview");
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  markSelected(null);
  setMessage(`Searching with ${file.name}…`);
  $("#results-meta").textContent = "";
  const started = performance.now();
  let response;
  if (file.size <= MAX_REQUEST_PHOTO_BYTES) {
    response = await fetch(`/search?${searchParams()}`, {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
  } else {
    // Too large for one request (6 MB with base64): upload it to the bucket first, then search by key.
    setMessage(`Uploading ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`);
    response = await fetch("/uploads", { method: "POST" });
    if (response.ok) {
      const upload = await response.json();
      const form = new FormData();
      Object.entries(upload.fields).forEach(([name, value]) => form.append(name, value));
      form.append("file", file);
      const stored = await fetch(upload.url, { method: "POST", body: form });
      response = stored.ok
        ? await fetch(`/search?${searchParams()}`, {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ s3_key: upload.s3_key }),
          })
        : stored;
    }
  }
  if (!isCurrent(ticket)) return;
  if (!response.ok) {
    const text = await errorText(response);
    if (!isCurrent(ticket)) return;
    renderResults([], "Results");
    setMessage(`Search failed (${response.status}): ${text}`, true);
    return;
  }
  const payload = await response.json();
  if (!isCurrent(ticket)) return;
  const rows = resultRows(payload);
  setMessage("");
  renderResults(rows, `Products that look like ${file.name}`, payload.match_cutoffs, payload.suggested_categories);
  $("#results-meta").textContent = resultsMeta(rows, started);
}

async function findSimilar(productId) {
  const ticket = newRequest();
  state.lastQuery = { kind: "product", productId };
  markSelected(productId);
  showProductPreview(productId);
  setMessage(`Finding products similar to ${productId}…`);
  const started = performance.now();
  const response = await fetch(`/products/${encodeURIComponent(productId)}/similar?${searchParams()}`);
  if (!isCurrent(ticket)) return;
  if (!response.ok) {
    const text = await errorText(response);
    if (!isCurrent(ticket)) return;
    renderResults([], "Results");
    setMessage(`Could not find products similar to ${productId} (${response.status}): ${text}`, true);
    return;
  }
  const payload = await response.json();
  if (!isCurrent(ticket)) return;
  const rows = resultRows(payload);
  setMessage("");
  renderResults(rows, `Similar to ${productId}`, payload.match_cutoffs);
  $("#results-meta").textContent = resultsMeta(rows, started);
}

// "Similar to X" shows X itself: its first photo, from the catalogue or from the API.
async function showProductPreview(productId) {
  const preview = $("#query-preview");
  const known = state.catalogue.find((product) => product.product_id === productId);
  let key = known ? known.key : null;
  if (!key) {
    const response = await fetch(`/products/${encodeURIComponent(productId)}`);
    if (response.ok) key = ((await response.json()).images || [])[0]?.key ?? null;
  }
  if (state.lastQuery?.kind !== "product" || state.lastQuery.productId !== productId) return;
  preview.hidden = !key;
  if (key) {
    preview.src = thumbnailUrl({ key });
    preview.alt = productId;
  }
}

function markSelected(productId) {
  state.selectedProduct = productId;
  document.querySelectorAll(".strip .item").forEach((item) => {
    item.classList.toggle("selected", item.dataset.product === productId);
  });
}

function rerun() {
  const query = state.lastQuery;
  if (!query) return;
  if (query.kind === "photo") searchWithFile(query.file);
  else findSimilar(query.productId);
}

async function loadCatalogue() {
  const response = await fetch("/local/catalogue");
  if (!response.ok) return;
  const products = await response.json();
  state.catalogue = products;
  const strip = $("#catalogue");
  strip.replaceChildren();
  for (const product of products) {
    const item = document.createElement("div");
    item.className = `item ${product.state}`;
    item.dataset.product = product.product_id;
    item.title = `${product.product_id} (${product.category}) — ${product.state}${product.reason ? ": " + product.reason : ""}`;
    const img = document.createElement("img");
    img.src = thumbnailUrl(product);
    img.alt = product.product_id;
    img.loading = "lazy";
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = product.state === "rejected" ? `${product.product_id} (rejected)` : product.product_id;
    item.append(img, label);
    if (product.state !== "rejected") item.addEventListener("click", () => findSimilar(product.product_id));
    strip.append(item);
  }
  markSelected(state.selectedProduct);
  const categories = [...new Set(products.map((product) => product.category))].sort();
  const select = $("#category-filter");
  const current = select.value;
  select.replaceChildren(new Option("All categories", ""), ...categories.map((name) => new Option(name, name)));
  select.value = categories.includes(current) ? current : "";
  $("#category-list").replaceChildren(...categories.map((name) => new Option(name)));
}

async function refreshStatus() {
  try {
    const response = await fetch("/local/status");
    const status = await response.json();
    const pill = $("#stack-status");
    pill.textContent = `${status.embedded} photos searchable` +
      (status.rejected ? ` · ${status.rejected} refused` : "") +
      (status.pending ? ` · ${status.pending} being added` : "");
    pill.classList.toggle("busy", status.pending > 0);
    return status;
  } catch {
    $("#stack-status").textContent = "not reachable";
    return null;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function uploadProduct(event) {
  event.preventDefault();
  const file = $("#upload-file").files[0];
  const productId = $("#upload-product").value.trim();
  const category = $("#upload-category").value.trim();
  const status = $("#upload-status");
  const button = $("#upload-form button");
  if (!file) return;
  button.disabled = true;
  status.className = "upload-status";
  status.textContent = `Uploading ${file.name}…`;
  try {
    const params = new URLSearchParams({ product_id: productId, category, filename: file.name });
    const response = await fetch(`/upload?${params}`, {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    if (!response.ok) throw new Error(await errorText(response));
    const uploaded = await response.json();
    status.textContent = `Uploaded ${file.name} — analysing the photo…`;
    const started = performance.now();
    for (let attempt = 0; attempt < 240; attempt += 1) {
      await sleep(500);
      const object = await (await fetch(`/local/objects?key=${encodeURIComponent(uploaded.key)}`)).json();
      if (object.state === "rejected") {
        status.className = "upload-status bad";
        status.textContent = `This file could not be used as a product photo: ${object.detail || object.reason}`;
        await loadCatalogue();
        return;
      }
      if (object.state === "embedded") {
        // The product is now visible through the query API as well.
        const product = await fetch(`/products/${encodeURIComponent(productId)}`);
        if (product.ok) {
          const seconds = ((performance.now() - started) / 1000).toFixed(1);
          status.className = "upload-status good";
          status.textContent = `✓ ${productId} is searchable (${seconds} s after upload).`;
          await loadCatalogue();
          await refreshStatus();
          await findSimilar(productId);
          return;
        }
      }
    }
    status.className = "upload-status bad";
    status.textContent = "The photo is still not searchable after 2 minutes: see the demo's console.";
  } catch (error) {
    status.className = "upload-status bad";
    status.textContent = `Upload failed: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

function setUpDropzone() {
  const zone = $("#dropzone");
  const input = $("#photo-input");
  input.addEventListener("change", () => searchWithFile(input.files[0]));
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") input.click();
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (file) searchWithFile(file);
  });
}

async function start() {
  setUpDropzone();
  $("#category-filter").addEventListener("change", rerun);
  $("#k-select").addEventListener("change", rerun);
  $("#upload-form").addEventListener("submit", uploadProduct);
  $("#show-weak").addEventListener("click", toggleWeak);
  await loadCatalogue();
  // Follow the ingest of the catalogue until the queue is empty, then now and then.
  let previous = -1;
  for (;;) {
    const status = await refreshStatus();
    if (status && status.embedded + status.rejected !== previous) {
      previous = status.embedded + status.rejected;
      await loadCatalogue();
    }
    await sleep(status && status.pending > 0 ? 1000 : 5000);
  }
}

start();
