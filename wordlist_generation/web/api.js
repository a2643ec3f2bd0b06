// Calls to the server: JSON, multipart uploads and the chat event stream.
// Every /v1 call carries the token as a bearer header; nothing is sent anywhere else.

export class ApiError extends Error {
  constructor(status, body, retryAfter = null) {
    const err = (body && body.error) || {};
    super(err.message || (status ? `HTTP ${status}` : "The server did not answer."));
    this.status = status;
    this.param = err.param || null;
    this.code = err.code || null;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

function url(path) {
  return new URL(path, document.baseURI).toString();
}

async function parseBody(res) {
  const text = await res.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return { error: { message: text.slice(0, 300) || `HTTP ${res.status}` } };
  }
}

async function failure(res) {
  const retry = res.headers.get("Retry-After");
  return new ApiError(res.status, await parseBody(res), retry === null ? null : Number(retry));
}

export function createApi(getToken) {
  function headers(extra = {}) {
    const token = getToken();
    return token ? { Authorization: `Bearer ${token}`, ...extra } : extra;
  }

  async function send(path, options) {
    let res;
    try {
      res = await fetch(url(path), { cache: "no-store", ...options });
    } catch (exc) {
      if (exc.name === "AbortError") throw exc;
      throw new ApiError(0, { error: { message: "The server could not be reached.", code: "unreachable" } });
    }
    if (!res.ok) throw await failure(res);
    return res;
  }

  return {
    /** GET or POST JSON under /v1 (the token is sent). */
    async json(path, { method = "GET", body, signal } = {}) {
      const init = { method, signal, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
      if (body !== undefined) init.body = JSON.stringify(body);
      return parseBody(await send(path, init));
    },

    /** A multipart upload (batch jobs). */
    async upload(path, form, { signal } = {}) {
      return parseBody(await send(path, { method: "POST", body: form, headers: headers(), signal }));
    },

    /** The raw response body (downloads). */
    async blob(path) {
      return (await send(path, { headers: headers() })).blob();
    },

    /** /health is open: no token. Returns {ok, status, body} and never throws. */
    async health() {
      try {
        const res = await fetch(url("health"), { cache: "no-store" });
        return { ok: true, httpStatus: res.status, body: await parseBody(res) };
      } catch {
        return { ok: false, httpStatus: 0, body: null };
      }
    },

    /** A streamed chat completion: calls onChunk(chunk) for every SSE data line. Resolves when
     *  `[DONE]` arrives; a stream that ends without it is a lost connection. */
    async stream(body, { onChunk, onOpen, signal }) {
      const res = await send("v1/chat/completions", {
        method: "POST",
        signal,
        headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify({ ...body, stream: true }),
      });
      if (onOpen) onOpen(res);
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let done = false;
      for (;;) {
        let part;
        try {
          part = await reader.read();
        } catch (exc) {
          if (exc.name === "AbortError") throw exc;
          break;
        }
        if (part.done) break;
        buffer += decoder.decode(part.value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of block.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            const data = line.slice(6);
            if (data === "[DONE]") {
              done = true;
              continue;
            }
            const chunk = JSON.parse(data);
            if (chunk.error) throw new ApiError(200, chunk);
            onChunk(chunk);
          }
        }
      }
      if (!done) {
        throw new ApiError(0, {
          error: { message: "The connection was lost before the answer was complete.", code: "connection_lost" },
        });
      }
    },
  };
}

/** One sentence for a person, from any failure. */
export function describeError(err) {
  if (!(err instanceof ApiError)) return `Something went wrong in the page: ${err.message || err}`;
  const msg = err.message;
  switch (err.status) {
    case 0:
      return err.code === "connection_lost" ? msg : "The server could not be reached. Check that it is running.";
    case 200:
      return `The server stopped with an error: ${msg}`;
    case 401:
      return `The server refused the access token (401): ${msg}`;
    case 404:
      return `Not found (404): ${msg}`;
    case 413:
      return `Too large (413): ${msg}`;
    case 422:
      return `These constraints cannot be satisfied (422): ${msg}`;
    case 429:
      return `The server is busy (429): ${msg}${/[.!?]$/.test(msg) ? "" : "."}` +
        (err.retryAfter ? ` Retry in ${err.retryAfter} s.` : "");
    case 503:
      return `The server is not ready (503): ${msg}`;
    default:
      if (err.status >= 400 && err.status < 500) {
        return `The server refused the request (${err.status}): ${msg}` + (err.param ? ` [field: ${err.param}]` : "");
      }
      return `The server failed (${err.status}): ${msg}`;
  }
}
