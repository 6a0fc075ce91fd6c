// The WebSocket client of WS /ws (docs/api.md): subscribe, receive events, reconnect.
//
// After a disconnect (the server restarted, the laptop slept) it reconnects with a
// growing delay and subscribes again with "since" set to the last seq it saw of every
// stream, so the server replays what was missed from the log: nothing lost, nothing
// doubled for streams already seen. Views also get onReconnect to refresh what the
// tables hold (runs that appeared meanwhile).

const MIN_DELAY_MS = 250;
const MAX_DELAY_MS = 5000;

export class LiveSocket {
  /**
   * subscription: {project: NAME} or {runs: [ID, ...]}.
   * handlers: onEvents(stream, runId, events), onStatus("live"|"connecting"|"offline"),
   * onReconnect().
   */
  constructor(subscription, handlers) {
    this.subscription = subscription;
    this.handlers = handlers;
    this.lastSeq = new Map();
    this.delay = MIN_DELAY_MS;
    this.opened = false;
    this.closed = false;
    this.ws = null;
    this.timer = 0;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    const target = new URL("ws", new URL(".", location.href));
    target.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    this.status("connecting");
    let ws;
    try {
      ws = new WebSocket(target);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.delay = MIN_DELAY_MS;
      const since = Object.fromEntries(this.lastSeq);
      ws.send(JSON.stringify({ op: "subscribe", ...this.subscription, since }));
      this.status("live");
      if (this.opened && this.handlers.onReconnect) this.handlers.onReconnect();
      this.opened = true;
    };
    ws.onmessage = (message) => this.receive(message.data);
    ws.onclose = () => {
      if (this.ws === ws) this.retry();
    };
    ws.onerror = () => ws.close();
  }

  receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (!Array.isArray(message.events) || !message.events.length) {
      if (message.type === "error") console.warn("waddle: live updates:", message.detail);
      return;
    }
    const last = message.events[message.events.length - 1].seq;
    const seen = this.lastSeq.get(message.stream) ?? -1;
    const fresh = message.events.filter((event) => event.seq > seen);
    if (Number.isInteger(last)) this.lastSeq.set(message.stream, Math.max(seen, last));
    if (fresh.length) this.handlers.onEvents(message.stream, message.run_id, fresh);
  }

  retry() {
    this.ws = null;
    if (this.closed) return;
    this.status("offline");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
  }

  status(state) {
    if (this.handlers.onStatus) this.handlers.onStatus(state);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
  }
}
