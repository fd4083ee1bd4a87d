// Types of Herald's JavaScript client. The implementation is index.js and
// src/; these declarations are its contract.
//
// Objects the server sends (events, topics, subscriptions, results) are its
// JSON as the API documents it, with snake_case members; options you pass
// are camelCase.

/** Starts the type URI of every problem Herald writes: "https://herald.dev/problems/". */
export declare const PROBLEM_TYPE_BASE: string;

/** An RFC 9457 problem document, as Herald writes them. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  field?: string;
  request_id?: string;
}

/**
 * A refusal by the server: its problem document, or, when the answer was
 * not one (a proxy's error page), a problem made from the HTTP status.
 */
export declare class HeraldError extends Error {
  constructor(problem: Problem, options?: { cause?: unknown });
  readonly name: 'HeraldError';
  /** The problem type URI; "about:blank" when the server sent none. */
  readonly type: string;
  readonly title: string;
  /** The HTTP status (for stream refusals, the status the refusal stands for). */
  readonly status: number;
  /** What went wrong, safe to show to a user. */
  readonly detail: string;
  /** The input at fault ("retention", "events[3].data", "topic"), or "". */
  readonly field: string;
  /** The server's request id, for its logs, or "". */
  readonly requestId: string;
  /** Herald's code: the type after PROBLEM_TYPE_BASE ("not-found", "invalid", ...), or "". */
  readonly code: string;
}

/** The server could not be reached, or the connection broke before an answer. */
export declare class ConnectionError extends Error {
  constructor(url: string, cause: unknown);
  readonly name: 'ConnectionError';
  readonly url: string;
}

/** Exponential backoff with full jitter, in milliseconds. */
export interface BackoffOptions {
  /** The ceiling of the first wait (default 100). */
  initial?: number;
  /** The cap of every wait (default 5000). */
  max?: number;
}

export declare const DEFAULT_BACKOFF: Readonly<Required<BackoffOptions>>;

/**
 * The wait before reconnection attempt `attempt` (0 first): uniformly
 * random in [0, min(max, initial * 2^attempt)).
 */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;

/** A connection token, or a function that gets one (called before every connection). */
export type TokenSource = string | (() => string | Promise<string>);

/** A WebSocket constructor: the browser's, Node 22's, undici's or the ws package's. */
export interface WebSocketConstructor {
  new (url: string, protocolsOrInit?: string | string[] | { headers?: Record<string, string> }): WebSocket;
}

export interface HeraldOptions {
  /** The server's URL ("https://herald.example.com"); in a browser, the page's origin by default. */
  url?: string;
  /**
   * An API key, sent as "Authorization: Bearer". For services only: never
   * give a key to a browser. REST calls need one.
   */
  key?: string;
  /**
   * A connection token for streams (POST /v1/tokens, made by your backend),
   * or a function returning one. A function is called before every
   * connection attempt, so it can hand out a fresh token after the last one
   * expired; cache in it if you like. Streams use the token instead of the
   * key when both are given.
   */
  token?: TokenSource;
  /** fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /**
   * WebSocket to use (default: the global one). Node 20 has one only with
   * --experimental-websocket; pass the ws package's there. To stream with
   * an API key (no token), the constructor must take { headers } as its
   * second argument, as Node's and ws's do; browsers' cannot.
   */
  WebSocket?: WebSocketConstructor | null;
  /** Waits between reconnection attempts of streams. */
  backoff?: BackoffOptions;
}

/** Options every REST call takes. */
export interface CallOptions {
  /** Aborts the call: it rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** A publish payload: JSON values, text, or bytes. */
export type Payload = unknown;

export interface PublishOptions extends CallOptions {
  /** The event id (a UUID or ULID); the server assigns one by default. */
  id?: string;
  /** The event type ("order.created"). */
  type?: string;
  /** The ordering and aggregation key. */
  key?: string;
  /** A publish with a key seen within the topic's dedup window stores nothing and returns the first event. */
  idempotencyKey?: string;
  /**
   * The payload's media type. By default: application/octet-stream for
   * bytes (Uint8Array, ArrayBuffer, typed arrays) and Blobs (or the Blob's
   * type), text/plain; charset=utf-8 for strings, application/json for
   * anything else, which is sent as JSON.
   */
  contentType?: string;
  /** Headers carried with the event (Herald-Header-<name>). */
  headers?: Record<string, string>;
  /** Publish at this time (a Date or RFC 3339): committed now, visible then (Herald-Deliver-At). */
  deliverAt?: Date | string;
  /** Publish after this many ms, or a duration string such as "15m" (Herald-Delay). */
  delay?: number | string;
}

export interface PublishResult {
  id: string;
  topic: string;
  /** 0 for a delayed event until it joins the log. */
  seq: number;
  /** The idempotency key was seen before: nothing was stored; id and seq are the first event's. */
  duplicate: boolean;
  /** Set for a delayed event: when it joins the log. */
  deliver_at?: string;
}

/** A delayed event waiting for its due time. */
export interface ScheduledEvent extends StoredEvent {
  deliver_at: string;
}

export interface ScheduledEventList {
  events: ScheduledEvent[];
  next_cursor?: string;
}

/** A schedule (docs/schedules.md): what putSchedule sends, and the state the server adds. */
export interface Schedule {
  name?: string;
  /** robfig/cron syntax, seconds optional; exactly one of cron and every. */
  cron?: string;
  /** An interval such as "30s" or "1h". */
  every?: string;
  time_zone?: string;
  event: {
    topic: string;
    type?: string;
    key?: string;
    content_type?: string;
    headers?: Record<string, string>;
    data?: unknown;
    data_base64?: string;
  };
  start_at?: string;
  end_at?: string;
  missed?: 'skip' | 'once' | 'all';
  max_missed?: number;
  paused?: boolean;
  readonly last_tick?: string;
  readonly next_fire_times?: string[];
  readonly created_at?: string;
  readonly updated_at?: string;
}

export interface ScheduleList {
  schedules: Schedule[];
  next_cursor?: string;
}

export interface UserSubscription {
  user: string;
  topic: string;
  created_at: string;
}

export interface UserConnections {
  user: string;
  connections: number;
  nodes: { node: string; connections: number }[];
}

/** One event of a batch: the options of publish, and its data. */
export interface BatchEvent {
  /** JSON values travel inline; strings and bytes byte for byte (in base64). */
  data?: Payload;
  id?: string;
  type?: string;
  key?: string;
  idempotencyKey?: string;
  contentType?: string;
  headers?: Record<string, string>;
  /** Delays this event, as PublishOptions.deliverAt and delay do. */
  deliverAt?: Date | string;
  delay?: number | string;
}

export interface BatchResult {
  id: string;
  seq: number;
  duplicate: boolean;
}

/** A CloudEvent in structured mode (specversion, id, source, type, data, extensions...). */
export interface CloudEvent {
  specversion: string;
  id: string;
  source: string;
  type: string;
  [attribute: string]: unknown;
}

/**
 * An event as Herald sends it, over REST and on streams. Exactly one of
 * data (a JSON payload, parsed) and data_base64 (any other) is present;
 * eventBytes and eventText read either.
 */
export interface HeraldEvent {
  id: string;
  topic: string;
  seq: number;
  type?: string;
  key?: string;
  /** RFC 3339, UTC, milliseconds. */
  time: string;
  content_type?: string;
  headers?: Record<string, string>;
  data?: unknown;
  data_base64?: string;
}

/** A stored event, as REST reads it. */
export interface StoredEvent extends HeraldEvent {
  content_type: string;
  idempotency_key?: string;
}

export interface EventPage {
  events: StoredEvent[];
  /** The seq to read after for the next page (the last event's, or the after_seq asked). */
  next_after_seq: number;
}

export interface ListEventsOptions extends CallOptions {
  /** Events after this seq (default 0: from the oldest retained). */
  afterSeq?: number;
  /** At most this many (the server's default and cap apply). */
  limit?: number;
}

export interface EventsOptions extends CallOptions {
  afterSeq?: number;
  /** Events per request (default 100). */
  pageSize?: number;
}

/** Topic settings; durations in Herald's form ("7d", "12h", "30m"). Absent fields take the server's defaults. */
export interface TopicSettings {
  retention?: string;
  max_event_bytes?: number;
  dedup_window?: string;
}

export interface Topic {
  name: string;
  retention: string;
  max_event_bytes: number;
  dedup_window: string;
  created_at: string;
  updated_at: string;
  head_seq: number;
  first_seq: number;
  event_count: number;
}

export interface TopicPage {
  topics: Topic[];
  /** Pass as cursor for the next page; absent on the last. */
  next_cursor?: string;
}

export interface PageOptions extends CallOptions {
  cursor?: string;
  limit?: number;
}

/** A subscription as the API describes it (see the OpenAPI document); its members pass through. */
export interface SubscriptionResource {
  id: string;
  topic: string;
  state: string;
  [member: string]: unknown;
}

export interface SubscriptionPage {
  subscriptions: SubscriptionResource[];
  next_cursor?: string;
}

export interface ListSubscriptionsOptions extends PageOptions {
  state?: 'pending' | 'active' | 'paused' | 'disabled' | 'failed';
  topic?: string;
}

export interface TokenRequest {
  /** read: and subscribe: scopes only, each held by the calling key ("read:orders.eu.>"). */
  scopes: string[];
  /** Lifetime in Herald's duration form (default "15m", at most "24h"). */
  ttl?: string;
  /** Makes it a token of this end user: "{user}" in scopes becomes the id, and its sockets get the user's server-side subscriptions. */
  user?: string;
}

export interface TokenResponse {
  token: string;
  expires_at: string;
  scopes: string[];
}

/** Where a stream starts: a seq (events after it; 0 for all retained), or a time (events at or after it). Absent: from now. */
export type Since = number | Date | string;

/** Events lost to retention before a stream could send them. */
export interface Gap {
  topic: string;
  missed_from: number;
  missed_to: number;
  first_seq?: number;
}

/**
 * A connection of a stream ended. reconnect says whether the client will
 * connect again (after delay ms); when it will not, the stream is closed,
 * by the client or for good, and error says why.
 */
export interface CloseInfo<Code> {
  code: Code;
  reason: string;
  reconnect: boolean;
  delay?: number;
  error?: Error;
}

/** Hooks both transports call. Whatever they throw goes to onError. */
export interface StreamHooks<Code> {
  /** A connection opened. */
  onOpen?: () => void;
  /** A connection ended (see CloseInfo). */
  onClose?: (info: CloseInfo<Code>) => void;
  /**
   * Errors that need attention: a refusal that ends the stream (a
   * HeraldError), a failing token callback, a callback that threw. Transient
   * connection failures are retried and only reported in onClose.
   */
  onError?: (error: Error) => void;
  /** Ends the stream when aborted, as close() does. */
  signal?: AbortSignal;
}

export interface SocketOptions extends StreamHooks<number> {
  /**
   * Frames this client does not handle: unknown ops (of newer servers) and
   * events of subscriptions it did not make (server-side ones).
   */
  onFrame?: (frame: { op: string; [member: string]: unknown }) => void;
  /**
   * With a user token: the events of the user's server-side subscriptions
   * (subscription "user:<topic>"). Giving it connects at once, and every
   * reconnect resumes those subscriptions from the last event delivered.
   */
  onUserEvent?: (event: HeraldEvent & { sub: string }) => void;
  /** Where the user's server-side subscriptions resume from, by topic (from a previous socket's userPositions). */
  userPositions?: Record<string, number>;
  /**
   * A server-side subscription started on this connection (frame
   * "subscribed", id "user:<topic>", with after_seq): from then on a
   * reconnect resumes it from there even before its first event.
   * Without the hook the frame goes to onFrame.
   */
  onUserSubscribed?: (frame: { op: 'subscribed'; id: string; topic: string; after_seq?: number; recovered?: boolean }) => void;
  /** A server-side subscription removed while connected (without the hook: onFrame). */
  onUserUnsubscribed?: (frame: { op: 'unsubscribed'; id: string }) => void;
  /** Events of a server-side subscription passed retention before they were read (without the hook: onFrame). */
  onUserGap?: (frame: { op: 'gap'; sub: string; topic: string; missed_from: number; missed_to: number; first_seq: number }) => void;
  /**
   * After this many ms without a frame from the server, send a ping; after
   * twice as many, give the connection up and reconnect (default 30000;
   * 0 turns it off).
   */
  keepAlive?: number;
}

/** The "subscribed" frame. */
export interface SubscribedFrame {
  op: 'subscribed';
  id: string;
  topic: string;
  recovered: boolean;
  after_seq?: number;
  first_seq?: number;
  time: string;
}

export interface SubscribeOptions {
  /** Receives each event once, in seq order per topic. */
  onEvent: (event: HeraldEvent) => void;
  /** The subscription's name on the connection (default: made up, unique). */
  id?: string;
  since?: Since;
  /** For a pattern: the seq last received in each topic (the positions of an earlier subscription). */
  positions?: Record<string, number>;
  /** A filter in the language of webhook subscriptions ({types, payload}). */
  filter?: unknown;
  onGap?: (gap: Gap) => void;
  /** Each (re)subscription acknowledged. */
  onSubscribed?: (frame: SubscribedFrame) => void;
  /** The server refused or ended the subscription (403, 404, 429...); the socket's onError otherwise. */
  onError?: (error: HeraldError) => void;
}

/** One subscription of a HeraldSocket. */
export declare class Subscription {
  private constructor();
  readonly id: string;
  readonly topic: string;
  /** "pending" until acknowledged (again after each reconnect), "active", or "closed". */
  readonly state: 'pending' | 'active' | 'closed';
  /** The seq of the last event delivered per topic (a single topic: also where it started). Resume a later subscription with positions. */
  readonly positions: Record<string, number>;
  /** Stops it; no event of it is delivered after this returns. */
  unsubscribe(): void;
}

/**
 * A WebSocket to GET /v1/stream carrying many subscriptions. It connects
 * with the first subscription; when a connection ends it reconnects (with
 * backoff; at once with a fresh token after a token expired) and
 * resubscribes every subscription after the last event it delivered, so
 * events come once each, in order per topic. It ends for good on close(),
 * its signal, or a refusal a retry cannot cure (a bad key or token, a
 * refused origin).
 */
export declare class HeraldSocket {
  private constructor();
  readonly state: 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';
  subscribe(topic: string, options: SubscribeOptions): Subscription;
  /** The seq last delivered per topic of the user's server-side subscriptions. */
  readonly userPositions: Record<string, number>;
  /** Closes the connection and every subscription; idempotent. */
  close(): void;
}

export interface StreamOptions extends StreamHooks<string> {
  /** Receives each event once, in seq order per topic. */
  onEvent: (event: HeraldEvent) => void;
  since?: Since;
  /** Resume from an earlier stream's lastEventId (takes precedence over since). */
  lastEventId?: string;
  /** A filter in the language of webhook subscriptions ({types, payload}). */
  filter?: unknown;
  onGap?: (gap: Gap) => void;
  /**
   * Give a connection up when nothing, not even a heartbeat (every 15 s),
   * came for this many ms (default 45000; 0 turns it off).
   */
  idleTimeout?: number;
}

/**
 * A Server-Sent Events stream of one topic or pattern
 * (GET /v1/topics/{topic}/stream), read with fetch. It connects at once;
 * when a connection ends it reconnects (with backoff; at once with a fresh
 * token after a token expired) and resumes after the last event with
 * Last-Event-ID. It ends for good on close(), its signal, a deleted topic,
 * or a refusal a retry cannot cure. CloseInfo.code is the server's
 * herald.disconnect code ("shutdown", "slow-consumer", "token-expired",
 * "not-found"), "closed" for close(), or "".
 */
export declare class HeraldStream {
  private constructor();
  readonly topic: string;
  readonly state: 'connecting' | 'open' | 'reconnecting' | 'closed';
  /** Where a reconnect resumes: the last event's id (a seq; opaque for a pattern). */
  readonly lastEventId: string;
  /** Ends the stream; idempotent. */
  close(): void;
}

/** The "unsubscribed" frame: a server-side subscription of the user was removed. */
export interface UnsubscribedFrame {
  op: 'unsubscribed';
  /** "user:<topic>" */
  id: string;
}

export interface UserStreamOptions extends StreamHooks<string> {
  /**
   * The events of the user's server-side subscriptions, each once, in seq
   * order per topic; sub is "user:<topic>", as on a socket.
   */
  onUserEvent: (event: HeraldEvent & { sub: string }) => void;
  /** Where the user's server-side subscriptions resume from, by topic (from an earlier stream's or socket's userPositions). */
  userPositions?: Record<string, number>;
  /** Each server-side subscription started (again after each reconnect), with the seq it goes on after. */
  onSubscribed?: (frame: SubscribedFrame) => void;
  /** A server-side subscription was removed (DELETE /v1/users/{user}/subscriptions/{topic}). */
  onUnsubscribed?: (frame: UnsubscribedFrame) => void;
  /** Events lost to retention before the stream could send them; sub is "user:<topic>". */
  onGap?: (gap: Gap & { sub: string }) => void;
  /**
   * Give a connection up when nothing, not even a heartbeat (every 15 s),
   * came for this many ms (default 45000; 0 turns it off).
   */
  idleTimeout?: number;
}

/**
 * The Server-Sent Events stream of an end user's server-side subscriptions
 * (GET /v1/stream with a token of the user): what a HeraldSocket given
 * onUserEvent receives, over plain HTTP, read with fetch. It connects at
 * once; when a connection ends it reconnects (with backoff; at once with a
 * fresh token after a token expired) and resumes each subscription after
 * its last event with Last-Event-ID, so events come once each, in order
 * per topic. A subscription that fails (herald.error: its topic was
 * deleted, say) is reported to onError and the others go on. It ends for
 * good on close(), its signal, or a refusal a retry cannot cure (a token of
 * no user: 400). CloseInfo.code is the server's herald.disconnect code,
 * "closed" for close(), or "".
 */
export declare class HeraldUserStream {
  private constructor();
  readonly state: 'connecting' | 'open' | 'reconnecting' | 'closed';
  /** The seq last delivered (or started after) per topic of the user's server-side subscriptions: seed a later stream or socket with it. */
  readonly userPositions: Record<string, number>;
  /** The stream's last id ("<topic>=<seq>,..."): what a reconnect sends as Last-Event-ID. */
  readonly lastEventId: string;
  /** Ends the stream; idempotent. */
  close(): void;
}

/** A client of one Herald server. */
export declare class Herald {
  constructor(options?: HeraldOptions);
  /** The server's base URL, without a trailing slash. */
  readonly url: string;

  /** Publishes one event. Resolves once it is committed. */
  publish(topic: string, data: Payload, options?: PublishOptions): Promise<PublishResult>;
  /** Publishes up to 1000 events in one request, committed together. */
  publishBatch(topic: string, events: BatchEvent[], options?: CallOptions): Promise<BatchResult[]>;
  /** Publishes a CloudEvent in structured mode. */
  publishCloudEvent(topic: string, event: CloudEvent, options?: CallOptions): Promise<PublishResult>;

  /** One page of a topic's events. */
  listEvents(topic: string, options?: ListEventsOptions): Promise<EventPage>;
  /** Every retained event after afterSeq, page by page, until the end of the topic. */
  events(topic: string, options?: EventsOptions): AsyncGenerator<StoredEvent, void, undefined>;
  getEvent(topic: string, id: string, options?: CallOptions): Promise<StoredEvent>;

  listTopics(options?: PageOptions): Promise<TopicPage>;
  getTopic(name: string, options?: CallOptions): Promise<Topic>;
  /** Creates a topic, or replaces its settings (admin). */
  putTopic(name: string, settings?: TopicSettings, options?: CallOptions): Promise<Topic>;
  /** Deletes a topic and its events (admin); its streams end with not-found. */
  deleteTopic(name: string, options?: CallOptions): Promise<void>;

  /** Creates a (webhook) subscription from the API's JSON. */
  createSubscription(spec: Record<string, unknown>, options?: CallOptions): Promise<SubscriptionResource>;
  listSubscriptions(options?: ListSubscriptionsOptions): Promise<SubscriptionPage>;
  getSubscription(id: string, options?: CallOptions): Promise<SubscriptionResource>;
  updateSubscription(id: string, patch: Record<string, unknown>, options?: CallOptions): Promise<SubscriptionResource>;
  deleteSubscription(id: string, options?: CallOptions): Promise<void>;
  pauseSubscription(id: string, options?: CallOptions): Promise<SubscriptionResource>;
  resumeSubscription(id: string, options?: CallOptions): Promise<SubscriptionResource>;

  /** Asks for a connection token for a browser (your backend calls this, with its key). */
  createToken(request: TokenRequest, options?: CallOptions): Promise<TokenResponse>;
  listScheduled(topic: string, options?: CallOptions & { cursor?: string; limit?: number }): Promise<ScheduledEventList>;
  cancelScheduled(topic: string, id: string, options?: CallOptions): Promise<void>;
  putSchedule(name: string, schedule: Schedule, options?: CallOptions): Promise<Schedule>;
  getSchedule(name: string, options?: CallOptions): Promise<Schedule>;
  listSchedules(options?: CallOptions & { cursor?: string; limit?: number }): Promise<ScheduleList>;
  deleteSchedule(name: string, options?: CallOptions): Promise<void>;
  pauseSchedule(name: string, options?: CallOptions): Promise<Schedule>;
  resumeSchedule(name: string, options?: CallOptions): Promise<Schedule>;
  putUserSubscription(user: string, topic: string, options?: CallOptions): Promise<UserSubscription>;
  deleteUserSubscription(user: string, topic: string, options?: CallOptions): Promise<void>;
  listUserSubscriptions(user: string, options?: CallOptions): Promise<UserSubscription[]>;
  userConnections(user: string, options?: CallOptions): Promise<UserConnections>;

  /** A WebSocket for many subscriptions; it connects with the first. */
  socket(options?: SocketOptions): HeraldSocket;
  /** An SSE stream of one topic or pattern; it connects at once. */
  stream(topic: string, options: StreamOptions): HeraldStream;
  /** With a user token: an SSE stream of the user's server-side subscriptions; it connects at once. */
  userStream(options: UserStreamOptions): HeraldUserStream;
}

/** An event's payload as bytes (JSON payloads as their JSON text). */
export declare function eventBytes(event: { data?: unknown; data_base64?: string }): Uint8Array;
/** An event's payload as text (UTF-8). */
export declare function eventText(event: { data?: unknown; data_base64?: string }): string;
