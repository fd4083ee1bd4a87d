// Herald's JavaScript client: publish and read over REST, and follow
// topics over WebSocket or Server-Sent Events with automatic reconnect and
// resume. index.d.ts documents every export.

export { Herald } from './src/client.js';
export { HeraldSocket, Subscription } from './src/socket.js';
export { HeraldStream, HeraldUserStream } from './src/sse.js';
export { HeraldError, ConnectionError, PROBLEM_TYPE_BASE } from './src/errors.js';
export { backoffDelay, DEFAULT_BACKOFF } from './src/backoff.js';
export { eventBytes, eventText } from './src/codec.js';
