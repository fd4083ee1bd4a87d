// Payload encodings: what a publish sends, and the bytes an event carries.

const utf8 = new TextEncoder();

/** Standard base64 of bytes (btoa takes "binary strings": one char per byte). */
export function toBase64(bytes) {
  let bin = '';
  const step = 0x8000; // String.fromCharCode takes its arguments on the stack
  for (let i = 0; i < bytes.length; i += step) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + step));
  }
  return btoa(bin);
}

/** Bytes of standard base64. */
export function fromBase64(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The bytes of a Uint8Array, another typed array, a DataView or an ArrayBuffer; else undefined. */
function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return undefined;
}

/** Whether a content type is JSON: application/json or a +json type. */
export function isJSONType(contentType) {
  const mt = contentType.split(';')[0].trim().toLowerCase();
  return mt === 'application/json' || mt.endsWith('+json');
}

/**
 * The body and content type of a single publish. Bytes and Blobs go as they
 * are (application/octet-stream, or the Blob's type), strings as UTF-8 text
 * (text/plain), anything else as JSON (application/json). An explicit
 * content type wins over the guess.
 * @returns {{body: BodyInit, contentType: string}}
 */
export function encodeBody(data, contentType) {
  const bytes = asBytes(data);
  if (bytes) return { body: bytes, contentType: contentType || 'application/octet-stream' };
  if (typeof Blob !== 'undefined' && data instanceof Blob) {
    return { body: data, contentType: contentType || data.type || 'application/octet-stream' };
  }
  if (typeof data === 'string') return { body: data, contentType: contentType || 'text/plain; charset=utf-8' };
  if (data === undefined) return { body: new Uint8Array(0), contentType: contentType || 'application/octet-stream' };
  return { body: JSON.stringify(data), contentType: contentType || 'application/json' };
}

/**
 * One event of a batch publish in the API's form: JSON values travel as
 * "data", bytes and strings byte for byte as "data_base64".
 */
export function encodeBatchEvent(e) {
  const out = {};
  if (e.id !== undefined) out.id = e.id;
  if (e.type !== undefined) out.type = e.type;
  if (e.key !== undefined) out.key = e.key;
  if (e.idempotencyKey !== undefined) out.idempotency_key = e.idempotencyKey;
  if (e.headers !== undefined) out.headers = e.headers;
  if (e.deliverAt !== undefined) out.deliver_at = e.deliverAt instanceof Date ? e.deliverAt.toISOString() : e.deliverAt;
  if (e.delay !== undefined) out.delay = typeof e.delay === 'number' ? `${Math.round(e.delay)}ms` : e.delay;
  let ct = e.contentType;
  const bytes = asBytes(e.data);
  if (bytes) {
    out.data_base64 = toBase64(bytes);
    ct = ct || 'application/octet-stream';
  } else if (typeof e.data === 'string') {
    out.data_base64 = toBase64(utf8.encode(e.data));
    ct = ct || 'text/plain; charset=utf-8';
  } else if (e.data !== undefined) {
    out.data = e.data;
  }
  if (ct !== undefined) out.content_type = ct;
  return out;
}

/**
 * The payload of an event (from a stream or a read) as bytes: JSON payloads
 * arrive parsed in `data` and come back as their JSON text, others arrive in
 * base64 in `data_base64`.
 * @param {{data?: unknown, data_base64?: string}} event
 * @returns {Uint8Array}
 */
export function eventBytes(event) {
  if (typeof event.data_base64 === 'string') return fromBase64(event.data_base64);
  if (event.data === undefined) return new Uint8Array(0);
  return utf8.encode(JSON.stringify(event.data));
}

/**
 * The payload of an event as text (UTF-8; invalid bytes become U+FFFD).
 * @param {{data?: unknown, data_base64?: string}} event
 */
export function eventText(event) {
  return new TextDecoder().decode(eventBytes(event));
}
