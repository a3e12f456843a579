// The console's only way to the service: the public GraphQL API over HTTP, and
// subscriptions over graphql-transport-ws. Nothing here is private to the console.

const config = JSON.parse(document.getElementById("console-config").textContent);
const KEY_STORE = "partnerbill.console.apiKey";

export function storedKey() {
  try {
    return localStorage.getItem(KEY_STORE) || "";
  } catch {
    return "";
  }
}

// The key in use: one the operator saved in this browser, else the development key the
// server hands to the page while anonymous development access is on (as GraphiQL gets it).
export function apiKey() {
  return storedKey() || config.devApiKey || "";
}

// Whether the page can talk to the API at all: with a key, or where the server serves
// requests without one (anonymous development access).
export function canConnect() {
  return Boolean(apiKey()) || Boolean(config.anonymous);
}

export function keySource() {
  if (storedKey()) return "stored";
  if (config.devApiKey) return "development";
  return "none";
}

export function saveKey(key) {
  if (key) localStorage.setItem(KEY_STORE, key);
  else localStorage.removeItem(KEY_STORE);
  featuresPromise = null;
  setConnection("idle", canConnect() ? "Live updates idle" : "No API key: see Settings");
  subscriptions.restart();
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export class ApiError extends Error {
  constructor(message, { status = 200, code = null, errors = [] } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.errors = errors;
  }
}

export async function gql(query, variables = {}) {
  let response;
  try {
    response = await fetch(config.graphqlPath, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", ...authHeaders() },
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    throw new ApiError("The service cannot be reached; try again.", { status: 0 });
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const errors = body && Array.isArray(body.errors) ? body.errors : [];
  if (!response.ok || !body || errors.length) {
    const first = errors[0];
    let message = first?.message || `The service answered HTTP ${response.status}.`;
    if (response.status === 401) message = `${message}. Set an API key in Settings.`;
    throw new ApiError(message, {
      status: response.status,
      code: first?.extensions?.code || null,
      errors,
    });
  }
  return body.data;
}

// What this server's schema offers, read once by introspection, so the console uses a field
// only where the server has it (as any client of a growing API should).
let featuresPromise = null;

const FEATURES = `query ConsoleFeatures {
  account: __type(name: "Account") { fields { name } }
  filter: __type(name: "AccountFilter") { inputFields { name } }
  query: __type(name: "Query") { fields { name } }
  mutation: __type(name: "Mutation") { fields { name } }
  bulkInput: __type(name: "CreateStandaloneInvoicesInput") { inputFields { name } }
}`;

export function features() {
  featuresPromise ??= gql(FEATURES).then(
    (data) => {
      const names = (list) => new Set((list || []).map((f) => f.name));
      return {
        account: names(data.account?.fields),
        filter: names(data.filter?.inputFields),
        query: names(data.query?.fields),
        mutation: names(data.mutation?.fields),
        bulkInput: names(data.bulkInput?.inputFields),
      };
    },
    (error) => {
      featuresPromise = null;
      throw error;
    },
  );
  return featuresPromise;
}

// graphql-transport-ws: one socket for all of the page's subscriptions, opened on the first
// and reopened (with every active subscription sent again) when it drops.
class SubscriptionClient {
  constructor() {
    this.socket = null;
    this.acked = false;
    this.nextId = 1;
    this.ops = new Map();
    this.retryDelay = 1000;
    this.retryTimer = null;
    this.refused = false;
  }

  url() {
    const url = new URL(config.graphqlPath, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.toString();
  }

  subscribe(query, variables, handlers) {
    const id = String(this.nextId++);
    this.ops.set(id, { query, variables, handlers, sent: 0 });
    if (this.acked) this.sendSubscribe(id);
    else this.connect();
    return () => {
      if (!this.ops.delete(id)) return;
      if (this.acked) this.send({ id, type: "complete" });
    };
  }

  connect() {
    if (this.socket || this.refused) return;
    clearTimeout(this.retryTimer);
    setConnection("connecting", "Connecting…");
    const socket = new WebSocket(this.url(), "graphql-transport-ws");
    this.socket = socket;
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "connection_init", payload: authHeaders() }));
    });
    socket.addEventListener("message", (event) => this.onMessage(JSON.parse(event.data)));
    socket.addEventListener("close", (event) => this.onClose(socket, event));
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
    }
  }

  sendSubscribe(id) {
    const op = this.ops.get(id);
    if (!op) return;
    op.sent += 1;
    // A subscription sent again after a reconnect missed what happened meanwhile.
    if (op.sent > 1) op.handlers.resync?.();
    this.send({ id, type: "subscribe", payload: { query: op.query, variables: op.variables } });
  }

  onMessage(message) {
    const op = message.id ? this.ops.get(message.id) : null;
    switch (message.type) {
      case "connection_ack":
        this.acked = true;
        this.retryDelay = 1000;
        setConnection("live", "Live updates on");
        for (const id of this.ops.keys()) this.sendSubscribe(id);
        break;
      case "ping":
        this.send({ type: "pong" });
        break;
      case "next":
        if (!op) break;
        if (message.payload?.errors?.length) op.handlers.error?.(message.payload.errors);
        else op.handlers.next?.(message.payload.data);
        break;
      case "error":
        this.ops.delete(message.id);
        op?.handlers.error?.(message.payload);
        break;
      case "complete":
        this.ops.delete(message.id);
        op?.handlers.complete?.();
        break;
      default:
        break;
    }
  }

  onClose(socket, event) {
    if (socket !== this.socket) return;
    this.socket = null;
    this.acked = false;
    if (event.code === 4403) {
      // A refused key is refused again on every retry: wait for the operator to set one.
      this.refused = true;
      setConnection("down", "Live updates refused: check the API key in Settings");
      for (const op of this.ops.values()) op.handlers.error?.([{ message: "API key refused" }]);
      return;
    }
    if (!this.ops.size) {
      setConnection("idle", "Live updates idle");
      return;
    }
    setConnection("down", "Live updates reconnecting…");
    this.retryTimer = setTimeout(() => this.connect(), this.retryDelay);
    this.retryDelay = Math.min(this.retryDelay * 2, 15000);
  }

  restart() {
    this.refused = false;
    const socket = this.socket;
    this.socket = null;
    this.acked = false;
    if (socket) socket.close(1000, "key changed");
    for (const op of this.ops.values()) op.sent = Math.max(op.sent, 1);
    if (this.ops.size) this.connect();
  }
}

function setConnection(state, text) {
  const el = document.getElementById("connection");
  if (!el) return;
  el.dataset.state = state;
  el.textContent = text;
}

const subscriptions = new SubscriptionClient();

export function subscribe(query, variables, handlers) {
  return subscriptions.subscribe(query, variables, handlers);
}

export { setConnection };
