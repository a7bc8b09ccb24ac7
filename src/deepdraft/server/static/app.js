// deepdraft web page: start a run, watch it live, review its plan, read the report, manage KBs.
//
// Plain ES module, no build step, nothing loaded from elsewhere. Every piece of text that comes
// from a model, a document or a user is inserted with textContent (through `h`), never as HTML.
// Views are chosen by the query string (?view=run&id=…), so URL hashes stay free for the report's
// citation links (#ref-3), which the browser follows natively.

const main = document.getElementById("main");
const notice = document.getElementById("notice");
const TOKEN_KEY = "deepdraft-token";

// ---- small helpers ---------------------------------------------------------------------------

/** An element with attributes (on* keys are listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function show(message, kind = "info") {
  notice.textContent = message;
  notice.className = `notice ${kind}`;
  notice.hidden = false;
  clearTimeout(show.timer);
  show.timer = setTimeout(() => { notice.hidden = true; }, kind === "error" ? 8000 : 4000);
}

function when(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

function label(status) {
  return status.replace(/_/g, " ");
}

function go(params) {
  const query = new URLSearchParams(params).toString();
  history.pushState(null, "", query ? `/?${query}` : "/");
  route();
}

// ---- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (response.status === 401) {
    await askForToken();
    return api(path, options);
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : body.detail.map((d) => d.msg).join("; ");
    } catch { /* not JSON: keep the status text */ }
    throw new ApiError(response.status, detail);
  }
  const type = response.headers.get("content-type") || "";
  return type.includes("application/json") ? response.json() : response.text();
}

function postJson(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function askForToken() {
  return new Promise((resolve) => {
    const input = h("input", { type: "password", id: "token", autocomplete: "off", required: true });
    const form = h("form", { class: "card", onsubmit: (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      resolve();
    } },
      h("h1", {}, "This server needs a token"),
      h("p", { class: "muted" }, "It was started with --token. The token is kept for this browser tab only."),
      h("div", { class: "field" }, h("label", { for: "token" }, "Token"), input),
      h("button", { type: "submit" }, "Continue"));
    main.replaceChildren(form);
    input.focus();
  });
}

/**
 * Follow a run's Server-Sent Events with fetch (so the token travels in a header, not the URL).
 * Reconnects after a dropped connection with Last-Event-ID: the server then sends only what was
 * missed (and `after` > 0 starts there, e.g. at a command's first event). Resolves when the server
 * says the run has finished, or when `signal` aborts; a stopped
 * run keeps the stream open, and its events go on arriving here once it is resumed.
 */
async function followEvents(runId, onMessage, signal, after = 0) {
  let lastId = after;
  for (let attempt = 0; !signal.aborted; attempt++) {
    try {
      const headers = { ...authHeaders(), Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = String(lastId);
      const response = await fetch(`/api/runs/${encodeURIComponent(runId)}/events`, { headers, signal });
      if (!response.ok) throw new ApiError(response.status, `event stream: HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const message = parseBlock(block);
          if (!message) continue;
          if (message.id) lastId = Number(message.id);
          onMessage(message);
          if (message.event === "end") return;
        }
      }
      attempt = 0;
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status === 404) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 500 * (attempt + 1))));
  }
}

function parseBlock(block) {
  const fields = { data: [] };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (name === "data") fields.data.push(value);
    else fields[name] = value;
  }
  if (!fields.data.length) return null;
  return { event: fields.event || "message", id: fields.id, data: JSON.parse(fields.data.join("\n")) };
}

// ---- routing ---------------------------------------------------------------------------------

let leave = () => {};

async function route() {
  leave();
  leave = () => {};
  const params = new URLSearchParams(location.search);
  const view = params.get("view") || "new";
  const section = { run: "runs", report: "runs" }[view] || view;
  for (const link of document.querySelectorAll("nav [data-nav]")) {
    if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    if (view === "run") await runView(params.get("id"));
    else if (view === "report") await reportView(params.get("id"), params.get("version"));
    else if (view === "runs") await runsView();
    else if (view === "kbs") await kbsView();
    else await newView();
  } catch (error) {
    main.replaceChildren(h("div", { class: "card" }, h("h1", {}, "Something went wrong"), h("p", {}, error.message)));
  }
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-nav], a[data-route]");
  if (!link || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  const url = new URL(link.href);
  history.pushState(null, "", url.pathname + url.search);
  route();
});
window.addEventListener("popstate", () => route());

// ---- new research ----------------------------------------------------------------------------

async function newView() {
  const kbs = await api("/api/kbs");
  const question = h("textarea", { id: "question", name: "question", required: true, rows: 3, maxlength: 4000,
    placeholder: "e.g. How did presidents argue about tariffs?" });
  // A select cannot wrap its text, so the options stay short (a phone is about 300 px wide) and the
  // hint below, which wraps, says what the chosen one means.
  const kbHint = h("p", { id: "kb-hint", class: "hint" });
  const kb = h("select", { id: "kb", name: "kb", "aria-describedby": "kb-hint",
    onchange: () => describeKb() },
    h("option", { value: "" }, "Default"),
    kbs.map((entry) => h("option", { value: entry.name }, entry.name)));
  const describeKb = () => {
    const entry = kbs.find((candidate) => candidate.name === kb.value);
    kbHint.textContent = !entry ? "The knowledge base named “default”, else the demo corpus."
      : entry.documents === null ? `Knowledge base “${entry.name}”.`
      : `Knowledge base “${entry.name}”: ${entry.documents} documents.`;
  };
  describeKb();
  const depths = {
    "": ["Automatic", "Quick on the built-in model, else standard."],
    quick: ["Quick", "A short report."],
    standard: ["Standard", "A full report."],
    deep: ["Deep", "More sections, more evidence."],
  };
  const depthHint = h("p", { id: "depth-hint", class: "hint" });
  const depth = h("select", { id: "depth", name: "depth", "aria-describedby": "depth-hint",
    onchange: () => { depthHint.textContent = depths[depth.value][1]; } },
    Object.entries(depths).map(([value, [name]]) => h("option", { value }, name)));
  depthHint.textContent = depths[""][1];
  const review = h("input", { type: "checkbox", id: "review", name: "review" });
  const start = h("button", { type: "submit" }, "Start research");
  const form = h("form", { class: "card", onsubmit: async (event) => {
    event.preventDefault();
    start.disabled = true;
    try {
      const run = await postJson("/api/runs", {
        question: question.value.trim(),
        kb: kb.value || null,
        depth: depth.value || null,
        review_outline: review.checked,
      });
      go({ view: "run", id: run.id });
    } catch (error) {
      show(error.message, "error");
      start.disabled = false;
    }
  } },
    h("h1", {}, "New research"),
    h("p", { class: "muted" }, "deepdraft searches your documents, drafts an outline, writes each part with citations and deepens the report as it goes."),
    h("div", { class: "field" }, h("label", { for: "question" }, "Question"), question),
    h("div", { class: "row" },
      h("div", { class: "field" }, h("label", { for: "kb" }, "Knowledge base"), kb, kbHint),
      h("div", { class: "field" }, h("label", { for: "depth" }, "Depth"), depth, depthHint)),
    h("div", { class: "field" }, h("label", { class: "check", for: "review" }, review,
      "Let me review and edit the outline before writing")),
    h("div", { class: "actions" }, start));
  main.replaceChildren(form);
  question.focus();
}

// ---- a run, live -----------------------------------------------------------------------------

async function runView(runId) {
  const detail = await api(`/api/runs/${encodeURIComponent(runId)}`);
  const state = {
    detail,
    status: detail.status,
    step: detail.steps,
    maxSteps: detail.max_steps,
    now: "",
    outline: detail.outline,
    fresh: new Set(),
    sources: new Set(),
    texts: new Map(),
    log: [],
    review: detail.review,
  };
  for (const node of walk(state.outline)) if (node.content) state.texts.set(node.position, node);

  const parts = {
    head: h("div", { class: "card" }),
    review: h("div"),
    outline: h("div", { class: "outline", "aria-live": "polite" }),
    sources: h("ol", { class: "sources" }),
    draft: h("div", { class: "draft" }),
    log: h("ul", { class: "log" }),
  };
  main.replaceChildren(
    parts.head,
    parts.review,
    h("div", { class: "live" },
      h("div", {},
        h("section", { class: "card", "aria-labelledby": "outline-h" }, h("h2", { id: "outline-h" }, "Outline"), parts.outline),
        h("section", { class: "card", "aria-labelledby": "sources-h" }, h("h2", { id: "sources-h" }, "Sources found"), parts.sources),
        h("section", { class: "card", "aria-labelledby": "log-h" }, h("h2", { id: "log-h" }, "Activity"), parts.log)),
      h("section", { class: "card draft-card", "aria-labelledby": "draft-h" }, h("h2", { id: "draft-h" }, "Draft"), parts.draft)));

  const render = () => {
    renderHead(parts.head, state, runId);
    renderReview(parts.review, state, runId);
    renderOutline(parts.outline, state);
    parts.sources.replaceChildren(...(state.sources.size
      ? [...state.sources].map((title) => h("li", {}, title))
      : [h("li", { class: "empty" }, "None yet")]));
    renderDraft(parts.draft, state);
    parts.log.replaceChildren(...state.log.slice(-60).reverse().map((line) => h("li", {}, line)));
  };
  render();

  const controller = new AbortController();
  leave = () => controller.abort();
  let pending = false;
  const later = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; render(); });
  };
  followEvents(runId, (message) => { apply(state, message); later(); }, controller.signal)
    .then(async () => {
      if (controller.signal.aborted) return;
      state.detail = await api(`/api/runs/${encodeURIComponent(runId)}`);
      state.status = state.detail.status;
      render();
    })
    .catch((error) => show(error.message, "error"));
}

function* walk(outline) {
  if (!outline) return;
  function* visit(nodes, prefix) {
    for (const [index, node] of nodes.entries()) {
      const number = prefix ? `${prefix}.${index + 1}` : `${index + 1}`;
      yield { ...node, number, position: `section-${number}`, level: number.split(".").length };
      yield* visit(node.children || [], number);
    }
  }
  yield* visit(outline.sections || [], "");
}

/** Fold one event into the live state. Unknown kinds (verification, synthesis…) go to the log. */
function apply(state, { event, data }) {
  switch (event) {
    case "run_started":
      state.status = state.command ? "continuing" : "running";
      state.maxSteps = data.max_steps || state.maxSteps;
      state.log.push(state.command ? `continued after step ${data.resumed_at_step}`
        : data.resumed_at_step ? `resumed at step ${data.resumed_at_step}` : "started");
      break;
    case "action_started":
      state.now = `${data.action} ${data.target}`;
      break;
    case "action_finished":
      state.step = data.step;
      state.now = `${data.action} ${data.target}`;
      state.log.push(`step ${data.step}: ${data.action} ${data.target}${data.valid ? "" : ` — refused: ${data.reason}`}`);
      break;
    case "evidence_added":
      for (const title of data.sources || []) state.sources.add(title);
      break;
    case "outline_changed":
      state.outline = data.outline;
      state.fresh = new Set(data.added || []);
      state.log.push(`outline: ${(data.added || []).length} new part(s)`);
      break;
    case "outline_reviewed":
      state.outline = data.outline;
      state.review = null;
      state.log.push(data.edited ? "outline edited by you" : "outline accepted");
      break;
    case "review_requested":
      state.review = data.outline;
      state.status = "awaiting_review";
      break;
    case "node_written":
      state.texts.set(data.position, { title: data.title, content: data.text });
      setNode(state.outline, data.position, { content: data.text });
      break;
    case "node_skipped":
      setNode(state.outline, data.position, { note: data.note });
      state.log.push(`${data.position} left unwritten: ${data.note}`);
      break;
    case "run_finished":
      state.status = "finished";
      state.now = "";
      state.log.push(`finished: ${data.stop_reason}`);
      break;
    case "run_failed":
      state.status = "failed";
      state.log.push(`failed: ${data.error}`);
      break;
    case "run_cancelled":
      state.status = "cancelled";
      state.log.push("cancelled");
      break;
    case "stopped": // cancelled, interrupted or failed; the stream stays open for a resume
    case "end":
      state.status = data.status;
      break;
    default:
      state.log.push(event.replace(/_/g, " "));
  }
}

function setNode(outline, position, changes) {
  for (const node of walk(outline)) {
    if (node.position !== position) continue;
    let target = outline;
    let list = target.sections;
    for (const part of node.number.split(".")) {
      target = list[Number(part) - 1];
      list = target.children || [];
    }
    Object.assign(target, changes);
  }
}

function renderHead(box, state, runId) {
  const live = ["queued", "running", "continuing", "awaiting_review"].includes(state.status);
  const stopped = ["cancelled", "interrupted", "failed"].includes(state.status);
  const buttons = [];
  if (live) {
    buttons.push(h("button", { type: "button", class: "danger", onclick: async (event) => {
      event.target.disabled = true;
      try { await postJson(`/api/runs/${encodeURIComponent(runId)}/cancel`, {}); show("Stopping before the next action…"); }
      catch (error) { show(error.message, "error"); event.target.disabled = false; }
    } }, "Cancel"));
  }
  if (stopped) {
    buttons.push(h("button", { type: "button", onclick: async () => {
      try { await postJson(`/api/runs/${encodeURIComponent(runId)}/resume`, {}); route(); }
      catch (error) { show(error.message, "error"); }
    } }, "Resume"));
  }
  if (state.status === "finished") {
    buttons.push(h("a", { class: "button", href: `/?view=report&id=${encodeURIComponent(runId)}`, "data-route": "" }, "Read the report"));
  }
  const parts = [
    h("div", { class: "run-head" },
      h("h1", {}, state.detail.question),
      h("span", { class: `badge ${state.status}`, id: "run-status" }, label(state.status))),
    h("ul", { class: "stats" },
      h("li", {}, "step ", h("strong", { id: "run-step" }, `${state.step}/${state.maxSteps}`)),
      h("li", {}, "written ", h("strong", {}, String(state.texts.size))),
      h("li", {}, "sources ", h("strong", {}, String(state.sources.size))),
      state.now && live ? h("li", {}, "now ", h("span", { class: "now" }, state.now)) : null,
      state.detail.kb ? h("li", {}, "KB ", h("strong", {}, state.detail.kb)) : null),
    state.detail.error && state.status === "failed" ? h("p", { class: "muted" }, state.detail.error) : null,
    buttons.length ? h("div", { class: "actions" }, buttons) : null,
  ];
  box.replaceChildren(...parts.filter(Boolean)); // replaceChildren would print a null as "null"
}

function renderOutline(box, state) {
  if (!state.outline) {
    box.replaceChildren(h("p", { class: "empty" }, "The outline appears after the first search."));
    return;
  }
  const current = state.now.split(" ")[1];
  const build = (nodes, prefix) => h("ol", {}, nodes.map((node, index) => {
    const number = prefix ? `${prefix}.${index + 1}` : `${index + 1}`;
    const position = `section-${number}`;
    const condition = node.content ? "written" : node.note ? "skipped" : "pending";
    const classes = [condition, state.fresh.has(position) ? "is-new" : "", current === position ? "current" : ""];
    return h("li", { class: classes.filter(Boolean).join(" "), dataset: { position, level: String(number.split(".").length) } },
      h("div", { class: "node" },
        h("span", { class: "mark", "aria-hidden": "true" }, node.content ? "✓" : node.note ? "✗" : "·"),
        h("span", { class: "num" }, number),
        h("span", { class: "title" }, node.title)),
      node.children && node.children.length ? build(node.children, number) : null);
  }));
  box.replaceChildren(h("h3", { class: "outline-title" }, state.outline.title), build(state.outline.sections, ""));
}

function renderDraft(box, state) {
  const written = [...walk(state.outline)].filter((node) => node.content);
  if (!written.length) {
    box.replaceChildren(h("p", { class: "empty" }, "Each part's text appears here as it is written."));
    return;
  }
  box.replaceChildren(...written.map((node) => h("section", { dataset: { position: node.position } },
    h("h3", {}, `${node.number} ${node.title}`),
    h("p", { class: "text" }, node.content.replace(/\\cite\{[^}]*\}/g, "[…]")))));
}

function renderReview(box, state, runId) {
  if (!state.review || state.status !== "awaiting_review") {
    box.replaceChildren();
    return;
  }
  if (box.dataset.shown === JSON.stringify(state.review)) return; // keep the user's edits
  box.dataset.shown = JSON.stringify(state.review);
  const title = h("input", { type: "text", id: "review-title", value: state.review.title, required: true });
  const list = h("ol", {});
  const error = h("p", { class: "error", role: "alert" });
  const addItem = (section) => {
    const id = `part-${Math.random().toString(36).slice(2, 8)}`;
    const item = h("li", {},
      h("div", { class: "field" }, h("label", { for: `${id}-t` }, "Section title"),
        h("input", { type: "text", id: `${id}-t`, class: "section-title", value: section.title, required: true })),
      h("div", { class: "field" }, h("label", { for: `${id}-p` }, "What it should cover"),
        h("textarea", { id: `${id}-p`, class: "section-plan", rows: 2, required: true }, section.plan)),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "icon", "aria-label": "Move up", onclick: () => item.previousElementSibling?.before(item) }, "↑"),
        h("button", { type: "button", class: "icon", "aria-label": "Move down", onclick: () => item.nextElementSibling?.after(item) }, "↓"),
        h("button", { type: "button", class: "icon", "aria-label": "Remove section", onclick: () => item.remove() }, "Remove")));
    list.append(item);
  };
  for (const section of state.review.sections) addItem(section);
  const send = async (body) => {
    try {
      await postJson(`/api/runs/${encodeURIComponent(runId)}/outline`, body);
      state.review = null;
      state.status = "running";
      box.replaceChildren();
      delete box.dataset.shown;
    } catch (failure) {
      error.textContent = failure.message;
    }
  };
  box.replaceChildren(h("form", { class: "card review", "aria-labelledby": "review-h", onsubmit: (event) => {
    event.preventDefault();
    const sections = [...list.children].map((item) => ({
      title: item.querySelector(".section-title").value.trim(),
      plan: item.querySelector(".section-plan").value.trim(),
    }));
    send({ title: title.value.trim(), sections });
  } },
    h("h2", { id: "review-h" }, "Review the outline"),
    h("p", { class: "muted" }, "The run waits for you. Rename, reorder, add or remove sections (3 to 12), then continue."),
    h("div", { class: "field" }, h("label", { for: "review-title" }, "Report title"), title),
    list,
    error,
    h("div", { class: "actions" },
      h("button", { type: "button", class: "secondary", onclick: () => addItem({ title: "", plan: "" }) }, "Add section"),
      h("button", { type: "submit" }, "Continue with this outline"),
      h("button", { type: "button", class: "secondary", onclick: () => send({ accept: true }) }, "Keep as proposed"))));
}

// ---- the report ------------------------------------------------------------------------------

async function reportView(runId, version) {
  const run = encodeURIComponent(runId);
  const [detail, listing] = await Promise.all([
    api(`/api/runs/${run}`),
    api(`/api/runs/${run}/versions`).catch(() => ({ versions: [] })),  // a run from before versions
  ]);
  const versions = listing.versions;
  const current = versions.find((v) => v.current);
  const shown = versions.find((v) => String(v.number) === version) || current;
  const markdown = await (shown && !shown.current
    ? api(`/api/runs/${run}/versions/${shown.number}`)
    : api(`/api/runs/${run}/report?format=md`));
  const downloads = detail.formats.map((format) => h("a", {
    class: "button secondary", href: `/api/runs/${run}/report?format=${format}&download=true`,
    onclick: (event) => { if (sessionStorage.getItem(TOKEN_KEY)) { event.preventDefault(); download(runId, format); } },
  }, format.toUpperCase()));
  const changes = h("section", { class: "changes", "aria-live": "polite", hidden: true });
  const progress = h("div", { class: "command-progress" });
  const article = h("article", { class: "report" }, renderMarkdown(markdown));
  main.replaceChildren(
    h("div", { class: "report-bar" },
      h("a", { href: `/?view=run&id=${run}`, "data-route": "" }, "← Back to the run"),
      versions.length ? versionPicker(runId, versions, shown, changes) : null,
      h("div", { class: "actions", "aria-label": "Download" }, downloads)),
    changes,
    progress,
    article);
  // Commands work on the run's latest state, which the current version shows: the sections of an
  // older version may be numbered otherwise, so only the current one offers them.
  if (detail.status === "finished" && (!shown || shown.current)) sectionTools(runId, detail, article, progress);
  else if (detail.status === "continuing") followCommand(runId, detail, progress, null);
  if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
}

// ---- commands on one section of the report ---------------------------------------------------

const COMMANDS = {
  deepen: { label: "Deepen", doing: "Deepening", help: "Split it into subsections, research and write them." },
  rewrite: { label: "Rewrite", doing: "Rewriting", help: "Search again and write it again." },
  recheck: { label: "Re-check", doing: "Re-checking", help: "Verify its citations again, repairing what they do not support." },
};

/** Make each numbered heading of the report a button that opens the section's tools beneath it. */
function sectionTools(runId, detail, article, progress) {
  for (const heading of article.querySelectorAll("h2[id^='sec-'], h3[id^='sec-'], h4[id^='sec-']")) {
    const number = heading.id.slice("sec-".length);
    const panelId = `tools-${number.replace(/\./g, "-")}`;
    const toggle = h("button", { type: "button", class: "heading-button", "aria-expanded": "false", "aria-controls": panelId,
      title: "Deepen, rewrite, re-check or show the evidence of this section" }, ...heading.childNodes);
    heading.replaceChildren(toggle);
    toggle.addEventListener("click", () => {
      const open = document.getElementById(panelId);
      if (open) { open.remove(); toggle.setAttribute("aria-expanded", "false"); return; }
      heading.after(toolsPanel(runId, detail, number, panelId, progress));
      toggle.setAttribute("aria-expanded", "true");
    });
  }
}

function toolsPanel(runId, detail, number, panelId, progress) {
  const instructionsId = `${panelId}-instructions`;
  const instructions = h("textarea", { id: instructionsId, rows: 2, maxlength: 2000,
    placeholder: "e.g. compare the farm states" });
  const evidence = h("div", { class: "evidence", "aria-live": "polite" });
  const error = h("p", { class: "error", role: "alert" });
  const buttons = Object.entries(COMMANDS).map(([command, { label, help }]) =>
    h("button", { type: "button", class: command === "deepen" ? "" : "secondary", title: help, dataset: { command },
      onclick: () => start(command, false) }, label));
  const panel = h("div", { class: "section-tools card", id: panelId, role: "group", "aria-label": `Section ${number}` },
    h("div", { class: "field" }, h("label", { for: instructionsId }, "Instructions for deepen or rewrite (optional)"), instructions),
    h("div", { class: "actions" }, buttons,
      h("button", { type: "button", class: "secondary", onclick: () => showEvidence(runId, number, evidence, error) }, "Show evidence")),
    error,
    evidence);
  const start = async (command, force) => {
    error.replaceChildren();
    const body = { section: number, force };
    if (command !== "recheck") body.instructions = instructions.value.trim();
    for (const button of document.querySelectorAll(".section-tools button, .heading-button")) button.disabled = true;
    try {
      const started = await postJson(`/api/runs/${encodeURIComponent(runId)}/${command}`, body);
      panel.remove();
      followCommand(runId, started, progress, `${COMMANDS[command].doing} section ${number}`);
    } catch (failure) {
      for (const button of document.querySelectorAll(".section-tools button, .heading-button")) button.disabled = false;
      error.append(failure.message);
      // A hand edit in the way: the user may go on, and the edit is kept as a version first.
      if (failure.status === 409 && /edited by hand/.test(failure.message)) {
        error.append(" ", h("button", { type: "button", class: "secondary", onclick: () => start(command, true) },
          "Go on anyway (keep my edit as a version)"));
      }
    }
  };
  return panel;
}

async function showEvidence(runId, number, box, error) {
  error.replaceChildren();
  try {
    const found = await api(`/api/runs/${encodeURIComponent(runId)}/sections/${encodeURIComponent(number)}/evidence`);
    box.replaceChildren(
      h("h3", {}, `Evidence of ${found.number} ${found.title}`),
      found.passages.length
        ? h("ul", { class: "passages" }, found.passages.map((passage) => h("li", {},
          h("div", { class: "passage-source" },
            passage.number !== null
              ? h("a", { class: "cite", href: `#ref-${passage.number}` }, passage.label || `[${passage.number}]`)
              : h("span", { class: "muted" }, "not in the References"),
            " ", h("strong", {}, passage.title),
            passage.page !== null ? `, p. ${passage.page}` : "",
            passage.cited ? h("span", { class: "tag cited" }, "cited") : null,
            passage.written_from ? h("span", { class: "tag" }, "written from") : null),
          h("blockquote", {}, passage.text))))
        : h("p", { class: "empty" }, "No passages: this section was not written from the run's evidence."));
  } catch (failure) {
    error.textContent = failure.message;
  }
}

/**
 * Watch a command on the run: its outline growing, its actions, then the report again with the
 * version it wrote. Only the command's events are read (those after `events_after`).
 */
function followCommand(runId, started, box, title) {
  const state = {
    detail: started,
    command: true,
    status: started.status,
    step: started.steps,
    maxSteps: started.max_steps,
    now: "",
    outline: started.outline,
    fresh: new Set(),
    sources: new Set(),
    texts: new Map(),
    log: [],
    review: null,
  };
  const status = h("span", { class: `badge ${state.status}`, id: "command-status" });
  const now = h("p", { class: "muted now" });
  const outline = h("div", { class: "outline", "aria-live": "polite" });
  const log = h("ul", { class: "log" });
  const actions = h("div", { class: "actions" });
  box.replaceChildren(h("section", { class: "card command-live", "aria-labelledby": "command-h" },
    h("div", { class: "run-head" }, h("h2", { id: "command-h" }, title || "A command is under way"), status),
    now, outline, log, actions));
  const render = () => {
    status.className = `badge ${state.status}`;
    status.textContent = label(state.status);
    now.textContent = state.now && state.status === "continuing" ? `now: ${state.now}` : "";
    renderOutline(outline, state);
    log.replaceChildren(...state.log.slice(-30).reverse().map((line) => h("li", {}, line)));
  };
  render();
  if (title) box.scrollIntoView({ block: "start" }); // the user clicked a heading further down
  const controller = new AbortController();
  leave = () => controller.abort();
  let stoppedShown = false;
  const onMessage = (message) => {
    apply(state, message);
    if (message.event === "stopped" && !stoppedShown) {
      stoppedShown = true;
      actions.replaceChildren(h("button", { type: "button", onclick: async () => {
        try { await postJson(`/api/runs/${encodeURIComponent(runId)}/resume`, {}); actions.replaceChildren(); stoppedShown = false; }
        catch (failure) { show(failure.message, "error"); }
      } }, "Resume"));
      api(`/api/runs/${encodeURIComponent(runId)}`).then((detail) => {
        if (detail.error) state.log.push(detail.error);
        render();
      });
    }
    render();
  };
  followEvents(runId, onMessage, controller.signal, started.events_after || 0)
    .then(async () => {
      if (controller.signal.aborted) return;
      const [detail, listing] = await Promise.all([
        api(`/api/runs/${encodeURIComponent(runId)}`),
        api(`/api/runs/${encodeURIComponent(runId)}/versions`),
      ]);
      const latest = listing.versions[listing.versions.length - 1];
      if (detail.error) show(detail.error, "error");
      else if (latest) show(`Version ${latest.number} (${latest.kind}): ${latest.changed}`);
      history.replaceState(null, "", `/?view=report&id=${encodeURIComponent(runId)}`);
      route();
    })
    .catch((failure) => show(failure.message, "error"));
}

/** Choose the version to read, and see in `changes` what it changed from the one before. */
function versionPicker(runId, versions, shown, changes) {
  const select = h("select", { id: "version", onchange: () => go({ view: "report", id: runId, version: select.value }) },
    versions.map((v) => h("option", { value: v.number, selected: v.number === shown.number },
      `${v.number} — ${v.kind}${v.current ? " (current)" : ""}, ${when(v.created_at)}`)));
  const toggle = h("button", { type: "button", class: "secondary", disabled: shown.number === 1, onclick: async () => {
    if (!changes.hidden) { changes.hidden = true; toggle.textContent = "What changed"; return; }
    try {
      const diff = await api(`/api/runs/${encodeURIComponent(runId)}/diff?newer=${shown.number}`);
      changes.replaceChildren(...renderChanges(diff).filter(Boolean));
      changes.hidden = false;
      toggle.textContent = "Hide the changes";
    } catch (error) { show(error.message, "error"); }
  } }, "What changed");
  return h("div", { class: "versions" }, h("label", { for: "version" }, "Version"), select, toggle);
}

/** A diff of two versions (from /api/runs/{id}/diff) as a list of changed sections. */
function renderChanges(diff) {
  const sign = { added: "+", removed: "−", rewritten: "~", renumbered: "~" };
  const title = (heading) => heading.replace(/^#+\s*/, "");
  return [
    h("h2", {}, `Version ${diff.older} → ${diff.newer}: ${diff.summary}`),
    h("ul", {}, diff.sections.map((section) => h("li", { class: `change ${section.change}` },
      h("strong", {}, `${sign[section.change]} ${section.old_heading ? `${title(section.old_heading)} → ` : ""}${title(section.heading)}`),
      ` (${section.change})`,
      section.lines.length ? h("pre", {}, section.lines.map((line) =>
        h("span", { class: line.startsWith("+") ? "plus" : "minus" }, `${line}\n`))) : null,
      section.sources_added.map((source) => h("div", { class: "plus" }, `cites now: ${source}`)),
      section.sources_removed.map((source) => h("div", { class: "minus" }, `no longer cites: ${source}`))))),
    diff.sources_added.length || diff.sources_removed.length
      ? h("p", {}, [...diff.sources_added.map((s) => `+ ${s}`), ...diff.sources_removed.map((s) => `− ${s}`)].join("; "))
      : null,
  ];
}

async function download(runId, format) {
  const response = await fetch(`/api/runs/${encodeURIComponent(runId)}/report?format=${format}&download=true`, { headers: authHeaders() });
  if (!response.ok) return show(`download failed: HTTP ${response.status}`, "error");
  const link = h("a", { href: URL.createObjectURL(await response.blob()), download: `${runId}.${format}` });
  link.click();
  URL.revokeObjectURL(link.href);
}

/**
 * A small Markdown renderer for deepdraft's reports, building DOM nodes (never HTML strings):
 * headings, paragraphs, lists, quotes, code, emphasis, links, citation marks such as [1] or
 * [2, p. 4; 3] (linked to their References entry) and the closing <details> block.
 */
function renderMarkdown(markdown) {
  const fragment = document.createDocumentFragment();
  const lines = markdown.replace(/\r\n?/g, "\n").split("\n");
  let container = fragment;
  let paragraph = [];
  let list = null;
  let inReferences = false;
  const flush = () => {
    if (paragraph.length) {
      const text = paragraph.join(" ");
      const reference = inReferences && text.match(/^\[(\d+)\]\s/);
      container.append(reference
        ? h("p", { class: "reference", id: `ref-${reference[1]}` }, inline(text))
        : h("p", {}, inline(text)));
    }
    paragraph = [];
  };
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index];
    let match;
    if (/^```/.test(line)) {
      flush(); list = null;
      const code = [];
      while (++index < lines.length && !/^```/.test(lines[index])) code.push(lines[index]);
      container.append(h("pre", {}, h("code", {}, code.join("\n"))));
    } else if ((match = line.match(/^(#{1,6})\s+(.*)$/))) {
      flush(); list = null;
      const level = match[1].length;
      const number = match[2].match(/^(\d+(?:\.\d+)*)\s/);
      inReferences = level === 2 && /^(references|参考文献|bibliography)$/i.test(match[2].trim());
      container.append(h(`h${level}`, number ? { id: `sec-${number[1]}` } : {}, inline(match[2])));
    } else if (/^<details>\s*$/.test(line)) {
      flush(); list = null;
      const details = h("details", {});
      container.append(details);
      container = details;
    } else if ((match = line.match(/^<summary>(.*)<\/summary>\s*$/))) {
      container.append(h("summary", {}, match[1]));
    } else if (/^<\/details>\s*$/.test(line)) {
      flush(); list = null;
      container = fragment;
    } else if ((match = line.match(/^\s*(?:[-*+]|(\d+)[.)])\s+(.*)$/))) {
      flush();
      const tag = match[1] ? "ol" : "ul";
      if (!list || list.tagName.toLowerCase() !== tag) {
        list = h(tag, {});
        container.append(list);
      }
      const item = h("li", {}, inline(match[2]));
      const reference = inReferences && match[2].match(/^\[(\d+)\]\s/);
      if (reference) { item.id = `ref-${reference[1]}`; item.className = "reference"; }
      list.append(item);
    } else if ((match = line.match(/^>\s?(.*)$/))) {
      flush(); list = null;
      container.append(h("blockquote", {}, inline(match[1])));
    } else if (!line.trim()) {
      flush(); list = null;
    } else {
      list = null;
      paragraph.push(line.trim());
    }
  }
  flush();
  return fragment;
}

const INLINE = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*|_[^_\s][^_]*_)|(\[[^\]]+\]\((https?:\/\/[^\s)]+)\))|(\[\d+(?:[^\]\[]{0,80})\](?!\())/g;

function inline(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > last) nodes.push(text.slice(last, match.index));
    const [whole, code, strong, emphasis, link, url, citation] = match;
    if (code) nodes.push(h("code", {}, code.slice(1, -1)));
    else if (strong) nodes.push(h("strong", {}, inline(strong.slice(2, -2))));
    else if (emphasis) nodes.push(h("em", {}, inline(emphasis.slice(1, -1))));
    else if (link) nodes.push(h("a", { href: url, rel: "noopener noreferrer", target: "_blank" }, link.slice(1, link.indexOf("]("))));
    else if (citation && /^\[\d+(?:(?:, p{1,2}\. [\d,–\- ]+)|(?:[,;] ?\d+))*(?:, p{1,2}\. [\d,–\- ]+)?\]$/.test(citation)) nodes.push(citationMark(citation));
    else nodes.push(whole);
    last = match.index + whole.length;
  }
  if (last < text.length) nodes.push(text.slice(last));
  return nodes;
}

/** "[2, p. 4; 3]" → "[", <a href="#ref-2">2</a>, ", p. 4; ", <a href="#ref-3">3</a>, "]". */
function citationMark(mark) {
  const span = h("span", { class: "citation" });
  let pages = false;
  for (const token of mark.match(/\d+|[^\d]+/g)) {
    if (/^\d+$/.test(token) && !pages) {
      span.append(h("a", { class: "cite", href: `#ref-${token}`, "aria-label": `reference ${token}` }, token));
    } else {
      if (/pp?\.\s*$/.test(token)) pages = true;
      if (token.includes(";")) pages = /pp?\./.test(token.split(";").pop());
      span.append(token);
    }
  }
  return span;
}

// ---- past runs -------------------------------------------------------------------------------

async function runsView() {
  const runs = await api("/api/runs");
  main.replaceChildren(h("section", { class: "card", "aria-labelledby": "runs-h" },
    h("h1", { id: "runs-h" }, "Runs"),
    runs.length
      ? h("ul", { class: "runs" }, runs.map((run) => h("li", {},
        h("a", { href: `/?view=run&id=${encodeURIComponent(run.id)}`, "data-route": "" }, run.question),
        h("span", { class: `badge ${run.status}` }, label(run.status)),
        h("span", { class: "muted small" }, `${run.steps} steps · ${when(run.created_at)}${run.kb ? ` · ${run.kb}` : ""}`))))
      : h("p", { class: "empty" }, "No runs yet.")));
}

// ---- knowledge bases -------------------------------------------------------------------------

async function kbsView() {
  const kbs = await api("/api/kbs");
  const name = h("input", { type: "text", id: "kb-name", required: true, list: "kb-names", pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}",
    placeholder: "e.g. papers", "aria-describedby": "kb-name-help" });
  const files = h("input", { type: "file", id: "kb-files", multiple: true, required: true,
    accept: ".txt,.md,.markdown,.rst,.jsonl,.pdf,.docx,.pptx,.xlsx,.html,.htm,.epub" });
  const progress = h("pre", { class: "progress-lines", hidden: true, "aria-live": "polite" });
  const submit = h("button", { type: "submit" }, "Upload and index");
  const form = h("form", { class: "card", onsubmit: async (event) => {
    event.preventDefault();
    const body = new FormData();
    for (const file of files.files) body.append("files", file, file.name);
    submit.disabled = true;
    progress.hidden = false;
    progress.textContent = "uploading…";
    try {
      let job = await api(`/api/kbs/${encodeURIComponent(name.value.trim())}/documents`, { method: "POST", body });
      while (job.status === "queued" || job.status === "running") {
        progress.textContent = job.progress.join("\n") || job.status;
        await new Promise((resolve) => setTimeout(resolve, 500));
        job = await api(`/api/jobs/${encodeURIComponent(job.id)}`);
      }
      progress.textContent = [...job.progress, `${job.status}: ${job.message}`].join("\n");
      show(job.status === "done" ? `Indexed: ${job.message}` : job.message, job.status === "done" ? "info" : "error");
      if (job.status === "done") kbsView();
    } catch (error) {
      progress.textContent = error.message;
      show(error.message, "error");
    } finally {
      submit.disabled = false;
    }
  } },
    h("h2", {}, "Add documents"),
    h("div", { class: "row" },
      h("div", { class: "field" }, h("label", { for: "kb-name" }, "Knowledge base"), name,
        h("span", { id: "kb-name-help", class: "muted small" }, "An existing name, or a new one: letters, digits, _ . -")),
      h("div", { class: "field" }, h("label", { for: "kb-files" }, "Files"), files,
        h("span", { class: "muted small" }, "PDF, Word, PowerPoint, Excel, EPUB, HTML, Markdown, text or JSONL; up to 50 MB each."))),
    h("datalist", { id: "kb-names" }, kbs.map((entry) => h("option", { value: entry.name }))),
    h("div", { class: "actions" }, submit),
    progress);
  main.replaceChildren(
    h("section", { class: "card", "aria-labelledby": "kbs-h" },
      h("h1", { id: "kbs-h" }, "Knowledge bases"),
      kbs.length
        ? h("ul", { class: "runs" }, kbs.map((entry) => h("li", {},
          h("strong", {}, entry.name),
          h("span", { class: "muted small" }, entry.documents === null ? "" : `${entry.documents} documents · ${entry.passages} passages`))))
        : h("p", { class: "empty" }, "No knowledge bases yet: add documents below.")),
    form);
}

route();
