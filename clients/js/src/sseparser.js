// A Server-Sent Events parser, as the HTML standard's "event stream
// interpretation" describes it, for text that arrives in arbitrary chunks.

/**
 * @typedef {object} SSEMessage
 * @property {string} event the event name ("message" when none was given)
 * @property {string} data the data lines joined by "\n"
 * @property {string} id the last event id as of this message
 * @property {boolean} hasData whether the message had data (EventSource dispatches only these)
 */

export class SSEParser {
  /** @param {(m: SSEMessage) => void} onMessage */
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buf = '';
    this.skipLF = false; // the last chunk ended with CR: a following LF belongs to it
    this.first = true; // a leading byte order mark is dropped
    this.lastId = '';
    this.reset();
  }

  reset() {
    this.event = '';
    this.data = [];
  }

  /** Feeds decoded text; every complete message is dispatched before it returns. */
  push(text) {
    if (this.first && text.length > 0) {
      this.first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.skipLF && text.startsWith('\n')) text = text.slice(1);
    this.skipLF = false;
    const s = this.buf + text;
    let start = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.line(s.slice(start, i));
      if (c === 13) {
        if (i + 1 === s.length) this.skipLF = true;
        else if (s.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
    }
    this.buf = s.slice(start);
  }

  line(line) {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return; // a comment: the heartbeat
    const colon = line.indexOf(':');
    let field = line;
    let value = '';
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
    }
    switch (field) {
      case 'event':
        this.event = value;
        break;
      case 'data':
        this.data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.lastId = value;
        break;
      // "retry" is the server's advice to EventSource; the client keeps its own backoff.
    }
  }

  dispatch() {
    const m = { event: this.event || 'message', data: this.data.join('\n'), id: this.lastId, hasData: this.data.length > 0 };
    this.reset();
    this.onMessage(m);
  }
}
