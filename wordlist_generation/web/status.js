// The server status chip: what /health says, refreshed while the page is open. It never guesses:
// no answer is "unreachable", and "busy" shows the counts the server reports.

const LABELS = {
  unknown: "Checking the server…",
  loading: "Loading the model…",
  ready: "Ready",
  busy: "Busy",
  error: "Error",
  unreachable: "Server unreachable",
};

export function readHealth(result) {
  if (!result.ok) return { state: "unreachable" };
  const body = result.body || {};
  if (!("status" in body)) return { state: "unreachable", detail: body.error && body.error.message };
  if (body.status === "error") return { state: "error", detail: body.error || "start-up failed" };
  if (body.status === "loading") return { state: "loading" };
  const running = body.running || 0;
  const waiting = body.waiting || 0;
  return { state: running || waiting ? "busy" : "ready", running, waiting, model: body.model };
}

export function chipText(s) {
  if (s.state === "busy") return `Busy · ${s.running} writing · ${s.waiting} waiting`;
  if (s.state === "error") return `Error: ${s.detail}`;
  if (s.state === "ready") return "Ready";
  return LABELS[s.state] || s.state;
}

export function startStatus(api, el, onChange) {
  let current = { state: "unknown" };
  let timer = null;
  let inflight = null;
  let again = false;

  async function poll() {
    const next = readHealth(await api.health());
    const changed = JSON.stringify(next) !== JSON.stringify(current);
    current = next;
    el.dataset.state = next.state;
    el.textContent = chipText(next);
    el.title = next.state === "unreachable" ? "No answer from /health; retrying every few seconds." : "";
    if (changed) onChange(next);
    return next;
  }

  /** Ask /health now (a call made while one is under way runs once more right after it). */
  function refresh() {
    if (inflight) {
      again = true;
      return inflight;
    }
    clearTimeout(timer);
    inflight = poll().finally(() => {
      inflight = null;
      if (again) {
        again = false;
        refresh();
        return;
      }
      const wait = current.state === "ready" ? 4000 : current.state === "busy" ? 1500 : 1000;
      timer = setTimeout(refresh, document.hidden ? Math.max(wait, 10000) : wait);
    });
    return inflight;
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  refresh();
  return { refresh, get current() { return current; } };
}
