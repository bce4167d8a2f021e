/**
 * notify-client.js: the browser client of the streamer gateway (an ES module, no build step).
 *
 *   import { NotifyClient } from "/client.js";
 *   const client = new NotifyClient({ userId, token, getToken });
 *   client.on("ai_generation_progress", (content, message) => ...);
 *   client.onAny((message) => ...);
 *   client.onState((state, detail) => ...);
 *   client.onResync((info) => ...);   // history was lost: refetch the app's state
 *   client.connect();
 *   client.close();
 *
 * Protocol (the gateway's contract): ws(s)://HOST/ws/{userId}, the JWT sent as the
 * subprotocol "bearer.<token>" (browsers cannot set headers), "?last_event_id=" to resume,
 * or, on a first open with the `history` option, "?history=N" for the user's newest N events.
 * Frames {"id","type","content"}; after a resume or the history
 * {"type":"_recovery","recovered","replayed"}.
 *
 * A refused token: a browser cannot read a refused handshake's status, so after repeated
 * failures to open the client asks GET /auth-check/{userId}?token=… (the status the
 * handshake gives). On 401/403 it first gets a fresh token from getToken() (if any); if that
 * one is refused too, or there is no getToken, it stops and reports state "closed" with
 * {reason: "token refused", status}: reconnecting could never succeed.
 *
 * The last event id lives in memory and in sessionStorage, so a reload resumes too. The
 * client reconnects with exponential backoff and full jitter, refreshes the token through
 * getToken() before it expires, and sends {"type":"ping"} keepalives so a silently dead
 * connection is noticed.
 */

/** Connection states, in the order a healthy client sees them. */
export const State = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

/** Close codes of the gateway (streamer/contract/websocket.py; a test keeps them equal). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  INVALID_DATA: 1007,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  RESYNC: 1012,
  TOKEN_EXPIRED: 4001,
  SLOW_CLIENT: 4008,
});

/**
 * The one user-id rule (streamer/contract/event.py; a test keeps them equal): 1 to 256
 * characters, no control characters, no spaces of any kind, no braces.
 */
export const USER_ID_PATTERN =
  /^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff{}]{1,256}$/u;

const DEFAULTS = Object.freeze({
  initialDelayMs: 500,
  maxDelayMs: 15000,
  pingIntervalMs: 25000,
  pongTimeoutMs: 10000,
  // Refresh this long before exp, but never more than a quarter of the token's lifetime,
  // so a short-lived token is not refreshed the moment it arrives.
  refreshBeforeExpiryMs: 60000,
  // After this many handshakes in a row that fail before opening, the token is suspect
  // (a browser cannot see the 401 itself), so getToken() is asked for a fresh one.
  failedHandshakesBeforeRefresh: 2,
  // Newest events to ask for on a first open (no stored last id); 0: start live.
  history: 0,
  // Ask /auth-check after repeated failed handshakes, to tell a refused token from an outage.
  authCheck: true,
});

/** True for something shaped like a JWT: three base64url parts, the first two non-empty. */
export function looksLikeJwt(token) {
  return typeof token === "string" && /^[\w-]+\.[\w-]+\.[\w-]*$/.test(token);
}

/** Compare two Redis stream ids ("<ms>-<seq>") numerically; strings would misorder them. */
export function compareIds(a, b) {
  const [am, as = "0"] = String(a).split("-");
  const [bm, bs = "0"] = String(b).split("-");
  const byMs = BigInt(am) - BigInt(bm);
  if (byMs !== 0n) return byMs < 0n ? -1 : 1;
  const bySeq = BigInt(as) - BigInt(bs);
  return bySeq === 0n ? 0 : bySeq < 0n ? -1 : 1;
}

/** The exp claim of a JWT in ms, or null; the client only reads it, the gateway verifies. */
export function tokenExpiryMs(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/** Full jitter: a random delay up to the exponential cap spreads a crowd of reconnects. */
export function backoffDelayMs(attempt, initialDelayMs, maxDelayMs, random = Math.random) {
  const cap = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(attempt, 30));
  return Math.max(initialDelayMs / 2, Math.round(random() * cap));
}

function defaultUrl() {
  const { protocol, host } = globalThis.location;
  return `${protocol === "https:" ? "wss" : "ws"}://${host}`;
}

function sessionStore() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // storage disabled (privacy mode, sandboxed iframe)
  }
}

export class NotifyClient {
  /**
   * @param {object} options
   * @param {string} options.userId  the user whose notifications to receive (the token's sub)
   * @param {string} [options.token]  a JWT; optional when getToken is given
   * @param {() => Promise<string>|string} [options.getToken]  returns a fresh JWT
   * @param {string} [options.url]  gateway base, e.g. "wss://notify.example.com"; default: this page's host
   * @param {Storage|null} [options.storage]  where the last event id survives reloads; default sessionStorage
   * @param {typeof WebSocket} [options.WebSocket]  a WebSocket implementation (for non-browser use)
   * @param {number} [options.history]  on a first open (no stored last id), ask for the user's
   *   newest N events (1 to the gateway's WS_MAX_REPLAY); default 0: start live
   * @param {boolean} [options.authCheck]  ask /auth-check after failed handshakes (default true)
   * @param {typeof fetch} [options.fetch]  a fetch implementation (for non-browser use)
   */
  constructor(options) {
    if (!options || !options.userId) throw new TypeError("NotifyClient: userId is required");
    if (!USER_ID_PATTERN.test(options.userId)) {
      throw new TypeError("NotifyClient: userId must be 1-256 characters without spaces or braces");
    }
    this.userId = options.userId;
    this.options = { ...DEFAULTS, ...options };
    this.baseUrl = (options.url ?? defaultUrl()).replace(/\/+$/, "");
    this.storage = options.storage === undefined ? sessionStore() : options.storage;
    this.storageKey = `notify-client:${this.baseUrl}:${this.userId}:last_event_id`;
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    this.fetchImpl = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this.token = options.token ?? null;
    this.state = State.IDLE;
    this.lastEventId = this._loadLastId();
    this._handlers = new Map(); // event type -> Set of handlers
    this._topics = new Map(); // topic -> { lastId, handlers: Set, resync: Set }
    this._anyHandlers = new Set();
    this._stateHandlers = new Set();
    this._resyncHandlers = new Set();
    this._socket = null;
    this._attempt = 0;
    this._failedHandshakes = 0;
    this._tokenStale = false;
    this._tokenFromRefresh = false;
    this._timers = new Set();
    this._pongTimer = null;
    this._running = false;
  }

  /** Call handler(content, message) for every notification of this type. Returns an unsubscribe. */
  on(eventType, handler) {
    if (!this._handlers.has(eventType)) this._handlers.set(eventType, new Set());
    this._handlers.get(eventType).add(handler);
    return () => this._handlers.get(eventType)?.delete(handler);
  }

  /** Call handler(message) for every notification. Returns an unsubscribe. */
  onAny(handler) {
    this._anyHandlers.add(handler);
    return () => this._anyHandlers.delete(handler);
  }

  /** Call handler(state, detail) on each connection state change. Returns an unsubscribe. */
  onState(handler) {
    this._stateHandlers.add(handler);
    return () => this._stateHandlers.delete(handler);
  }

  /**
   * Call handler({replayed}) when a resume could not be whole ("recovered": false): events
   * were lost from the kept history, so the app should refetch its state. Returns an unsubscribe.
   */
  onResync(handler) {
    this._resyncHandlers.add(handler);
    return () => this._resyncHandlers.delete(handler);
  }

  /** Open the connection (idempotent). Reconnects on its own until close(). */
  connect() {
    if (this._running) return;
    this._running = true;
    this._open(State.CONNECTING);
  }

  /** Close for good: no reconnect. The last event id is kept so a later client can resume. */
  close() {
    this._running = false;
    this._clearTimers();
    const socket = this._socket;
    this._socket = null;
    if (socket) socket.close(CloseCode.NORMAL, "client closed");
    this._setState(State.CLOSED, { reason: "closed by app" });
  }

  /**
   * Follow a topic (the token's `topics` claim must allow it): handler(content, message)
   * for each of its events, in order, once each, resumed from the last one seen after a
   * reconnect or a reload. `options.onResync({replayed})` is called when the gateway could
   * not replay what was missed (`recovered: false`): refetch that topic's state. Returns an
   * unsubscribe function. A refusal arrives as a "subscribe_refused" state detail.
   */
  subscribe(topic, handler, options = {}) {
    let entry = this._topics.get(topic);
    if (!entry) {
      entry = { lastId: this._loadTopicId(topic), handlers: new Set(), resync: new Set() };
      this._topics.set(topic, entry);
      this._sendSubscribe(topic, entry);
    }
    if (handler) entry.handlers.add(handler);
    if (options.onResync) entry.resync.add(options.onResync);
    return () => {
      if (handler) entry.handlers.delete(handler);
      if (options.onResync) entry.resync.delete(options.onResync);
      if (entry.handlers.size === 0 && entry.resync.size === 0) this.unsubscribe(topic);
    };
  }

  /** Stop following a topic. */
  unsubscribe(topic) {
    if (!this._topics.delete(topic)) return;
    const socket = this._socket;
    if (socket && socket.readyState === 1) {
      socket.send(JSON.stringify({ type: "unsubscribe", topic }));
    }
  }

  /** The topics followed now. */
  get topics() {
    return [...this._topics.keys()];
  }

  _sendSubscribe(topic, entry) {
    const socket = this._socket;
    if (!socket || socket.readyState !== 1) return; // sent when the socket opens
    const frame = { type: "subscribe", topic };
    if (entry.lastId) frame.last_event_id = entry.lastId;
    socket.send(JSON.stringify(frame));
  }

  _topicKey(topic) {
    return `${this.storageKey}:topic:${topic}`;
  }

  _loadTopicId(topic) {
    try {
      return this.storage?.getItem(this._topicKey(topic)) ?? null;
    } catch {
      return null;
    }
  }

  /** Forget the last event id: the next connection starts live, without a resume. */
  resetPosition() {
    this.lastEventId = null;
    this._storage("removeItem");
  }

  async _open(state) {
    this._setState(state, { attempt: this._attempt });
    let token;
    try {
      token = await this._currentToken();
    } catch (error) {
      this._scheduleReconnect({ reason: "getToken failed", error });
      return;
    }
    if (!this._running) return;
    if (!token) {
      this._stop({ reason: "token expired and no getToken" });
      return;
    }
    if (!looksLikeJwt(token) && !this.options.getToken) {
      this._stop({ reason: "token malformed" });
      return;
    }
    this._connectSocket(token);
  }

  _connectSocket(token) {
    const url = `${this.baseUrl}/ws/${encodeURIComponent(this.userId)}${this._query()}`;
    let socket;
    try {
      socket = new this.WebSocketImpl(url, [`bearer.${token}`]);
    } catch (error) {
      this._scheduleReconnect({ reason: "cannot open socket", error });
      return;
    }
    this._socket = socket;
    let opened = false;
    socket.onopen = () => {
      if (this._socket !== socket) return;
      opened = true;
      this._attempt = 0;
      this._failedHandshakes = 0;
      this._tokenFromRefresh = false;
      this._setState(State.OPEN, { resumedFrom: this.lastEventId });
      for (const [topic, entry] of this._topics) this._sendSubscribe(topic, entry);
      this._scheduleRefresh(token);
      this._schedulePing(socket);
    };
    socket.onmessage = (event) => {
      if (this._socket === socket) this._receive(event.data, socket);
    };
    // A failed connection fires error then close; close alone is handled.
    socket.onclose = (event) => {
      if (this._socket !== socket) return;
      this._socket = null;
      this._onClosed(event, opened, token);
    };
  }

  /** Resume after the last id; on a first open, the newest `history` events if asked. */
  _query() {
    if (this.lastEventId) return `?last_event_id=${encodeURIComponent(this.lastEventId)}`;
    const count = Number(this.options.history) || 0;
    return count > 0 ? `?history=${Math.floor(count)}` : "";
  }

  async _onClosed(event, opened, token) {
    this._clearTimers();
    if (!this._running) return;
    if (!opened) this._failedHandshakes += 1;
    const suspect = this._failedHandshakes >= this.options.failedHandshakesBeforeRefresh;
    if (!opened && suspect) {
      const status = await this._authStatus(token);
      if (!this._running || this._socket) return;
      if (status === 401 || status === 403) {
        if (!this.options.getToken || this._tokenFromRefresh) {
          this._stop({ reason: "token refused", status });
          return;
        }
        this._tokenFromRefresh = true; // the next token comes from getToken(): last chance
      }
    }
    if (event.code === CloseCode.TOKEN_EXPIRED || suspect) {
      this._tokenStale = true;
    }
    this._scheduleReconnect({ code: event.code, reason: event.reason || undefined });
  }

  /** The status the gateway's handshake gives this token (GET /auth-check), or null when
   * it cannot tell (no fetch, network error, an older gateway). */
  async _authStatus(token) {
    if (!this.options.authCheck || !this.fetchImpl || !token) return null;
    const base = this.baseUrl.replace(/^ws/, "http");
    const url = `${base}/auth-check/${encodeURIComponent(this.userId)}?token=${encodeURIComponent(token)}`;
    try {
      const response = await this.fetchImpl(url, { cache: "no-store" });
      return response.status === 404 ? null : response.status;
    } catch {
      return null;
    }
  }

  /** Stop for good because reconnecting cannot help; the app shows detail.reason. */
  _stop(detail) {
    this._running = false;
    this._clearTimers();
    this._setState(State.CLOSED, detail);
  }

  _receive(raw, socket) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return; // not ours to interpret; the contract only sends JSON objects
    }
    if (!message || typeof message !== "object") return;
    if (message.type === "pong") {
      this._cancel(this._pongTimer);
      this._pongTimer = null;
      return;
    }
    if (message.type === "ping") {
      socket.send(JSON.stringify({ type: "pong" }));
      return;
    }
    if (message.type === "_recovery") {
      this._recovered(message);
      return;
    }
    if (message.type === "subscribed" || message.type === "subscribe_refused") {
      this._topicAnswer(message);
      return;
    }
    if (message.type === "unsubscribed") return;
    if (message.broadcast === true) {
      this._dispatch(message); // not logged: no id, no resume
      return;
    }
    if (typeof message.id !== "string") return;
    if (typeof message.topic === "string") {
      this._topicEvent(message);
      return;
    }
    // The gateway already drops what a socket has seen; this guards the seam between
    // two sockets (a reconnect racing a late frame) so the app never sees an event twice.
    if (this.lastEventId && compareIds(message.id, this.lastEventId) <= 0) return;
    this.lastEventId = message.id;
    this._storage("setItem", message.id);
    this._dispatch(message);
  }

  _topicEvent(message) {
    const entry = this._topics.get(message.topic);
    if (!entry) return; // unsubscribed meanwhile
    if (entry.lastId && compareIds(message.id, entry.lastId) <= 0) return;
    entry.lastId = message.id;
    try {
      this.storage?.setItem(this._topicKey(message.topic), message.id);
    } catch {
      // storage full or disabled: the id stays in memory
    }
    this._emit(entry.handlers, message.content, message);
    this._dispatch(message);
  }

  _topicAnswer(message) {
    const entry = this._topics.get(message.topic);
    this._emit(this._handlers.get(message.type), message, message);
    if (message.type === "subscribe_refused") {
      this._setState(this.state, { topic: message.topic, refused: message.reason });
      return;
    }
    if (entry && message.recovered === false) {
      this._emit(entry.resync, { replayed: message.replayed ?? 0 });
    }
  }

  _recovered(message) {
    this._emit(this._handlers.get("_recovery"), message, message);
    if (message.recovered === false) {
      this._emit(this._resyncHandlers, { replayed: message.replayed ?? 0 });
    }
  }

  _dispatch(message) {
    this._emit(this._handlers.get(message.type), message.content, message);
    this._emit(this._anyHandlers, message);
  }

  _emit(handlers, ...args) {
    for (const handler of handlers ?? []) {
      try {
        handler(...args);
      } catch (error) {
        // One broken handler must not stop delivery to the others or kill the socket.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  async _currentToken() {
    const { getToken, refreshBeforeExpiryMs } = this.options;
    const expiry = this.token ? tokenExpiryMs(this.token) : null;
    const expiring = expiry !== null && expiry - Date.now() <= Math.min(1000, refreshBeforeExpiryMs);
    if (getToken && (!this.token || this._tokenStale || expiring)) {
      this.token = await getToken();
      this._tokenStale = false;
      return this.token;
    }
    return expiring ? null : this.token;
  }

  _scheduleRefresh(token) {
    const expiry = tokenExpiryMs(token);
    if (!this.options.getToken || expiry === null) return;
    const now = Date.now();
    const lifetime = Math.max(0, expiry - now);
    const margin = Math.min(this.options.refreshBeforeExpiryMs, lifetime / 4);
    this._later(() => this._refreshToken(), lifetime - margin);
  }

  /**
   * The protocol has no in-band token renewal, so a fresh token means a fresh socket. It
   * resumes from the last event id, so nothing is lost in the switch.
   */
  async _refreshToken() {
    if (!this._running) return;
    try {
      this.token = await this.options.getToken();
    } catch (error) {
      // Keep the current socket; when the gateway closes it at expiry, reconnect retries.
      this._tokenStale = true;
      this._setState(this.state, { reason: "getToken failed", error });
      return;
    }
    if (!this._running) return;
    const old = this._socket;
    this._socket = null;
    this._clearTimers();
    if (old) old.close(CloseCode.NORMAL, "token refresh");
    this._open(State.RECONNECTING);
  }

  _schedulePing(socket) {
    const { pingIntervalMs, pongTimeoutMs } = this.options;
    if (!pingIntervalMs) return;
    this._later(() => {
      if (this._socket !== socket || socket.readyState !== 1) return;
      socket.send(JSON.stringify({ type: "ping" }));
      // No pong in time: the path is dead even if TCP has not noticed; start over.
      this._pongTimer = this._later(() => socket.close(4000, "pong timeout"), pongTimeoutMs);
      this._schedulePing(socket);
    }, pingIntervalMs);
  }

  _scheduleReconnect(detail) {
    if (!this._running) return;
    const { initialDelayMs, maxDelayMs } = this.options;
    const delay = backoffDelayMs(this._attempt, initialDelayMs, maxDelayMs);
    this._attempt += 1;
    this._setState(State.RECONNECTING, { ...detail, delayMs: delay, attempt: this._attempt });
    this._later(() => {
      if (this._running && !this._socket) this._open(State.CONNECTING);
    }, delay);
  }

  _later(fn, ms) {
    const timer = setTimeout(() => {
      this._timers.delete(timer);
      fn();
    }, ms);
    this._timers.add(timer);
    return timer;
  }

  _cancel(timer) {
    clearTimeout(timer);
    this._timers.delete(timer);
  }

  _clearTimers() {
    for (const timer of this._timers) clearTimeout(timer);
    this._timers.clear();
    this._pongTimer = null;
  }

  _setState(state, detail = {}) {
    this.state = state;
    this._emit(this._stateHandlers, state, detail);
  }

  _loadLastId() {
    const id = this._storage("getItem");
    return typeof id === "string" && /^\d+-\d+$/.test(id) ? id : null;
  }

  _storage(method, value) {
    if (!this.storage) return null;
    try {
      return this.storage[method](this.storageKey, value);
    } catch {
      return null; // quota or privacy errors only cost the reload-resume, not delivery
    }
  }
}
