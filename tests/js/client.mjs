// A real pusher-js (or Laravel Echo on top of pusher-js) client driven by the Python tests.
//
// Usage: node client.mjs '<config JSON>'
//   config: {
//     lib: "pusher" | "echo",            which library's API the commands use
//     key, host, port,                   where the server is
//     wsPath?: "/ws",                    server path prefix
//     authEndpoint?: "http://…/auth",    channel authorization endpoint (private/presence)
//     authParams?: {…},                  extra form fields posted to the auth endpoint
//     activityTimeout?: ms, pongTimeout?: ms
//   }
//
// Protocol: one JSON command per stdin line, one JSON observation per stdout line.
//   Every command may carry an "id"; once it has run, {"type":"ack","id":…,"result":…} is printed
//   (or {"type":"ack","id":…,"error":"…"} when it threw).
//   Observations: {"type":"state",previous,current,socket_id}, {"type":"connected",socket_id},
//   {"type":"connection_error",error}, {"type":"heartbeat",event} (pusher:ping/pong received), {"type":"subscription_succeeded",channel,data|members},
//   {"type":"subscription_error",channel,data}, {"type":"member_added"|"member_removed",channel,member},
//   {"type":"event",channel,event,data} (every other event through bind_global),
//   {"type":"bound",channel,event,data,metadata} (callbacks from explicit bind(), with pusher-js metadata),
//   Echo: {"type":"echo_event",channel,listener,data,metadata}, {"type":"echo_whisper",channel,whisper,data,metadata},
//   {"type":"echo_subscribed",channel}, {"type":"echo_error",channel,error},
//   {"type":"echo_here"|"echo_joining"|"echo_leaving",channel,…}.
import { bindEvent as bindOn, emit, membersOf, observeChannel, safe, serveCommands, wsOptions } from './harness.mjs';

const bindEvent = (name, event) => bindOn(pusher, name, event);
import Pusher from 'pusher-js';
import Echo from 'laravel-echo';

const config = JSON.parse(process.argv[2] ?? '{}');


const pusherOptions = wsOptions(config);
if (config.activityTimeout) pusherOptions.activityTimeout = config.activityTimeout;
if (config.pongTimeout) pusherOptions.pongTimeout = config.pongTimeout;

Pusher.logToConsole = false;
Pusher.log = (msg) => process.stderr.write(`[pusher-js] ${msg}\n`);

let pusher;
let echo = null;
if (config.lib === 'echo') {
  // The options a Laravel app passes for `broadcaster: 'reverb'` (laravel docs, broadcasting.md).
  const options = { broadcaster: 'reverb', key: config.key, Pusher, ...pusherOptions };
  if (config.authEndpoint) {
    options.authEndpoint = config.authEndpoint;
    options.auth = { headers: {}, params: config.authParams ?? {} };
  }
  echo = new Echo(options);
  pusher = echo.connector.pusher;
} else {
  const options = { ...pusherOptions };
  if (config.authEndpoint) {
    options.channelAuthorization = {
      endpoint: config.authEndpoint,
      transport: 'ajax',
      params: config.authParams ?? {},
    };
  }
  pusher = new Pusher(config.key, options);
}

pusher.connection.bind('state_change', (s) =>
  emit({ type: 'state', previous: s.previous, current: s.current, socket_id: pusher.connection.socket_id ?? null }),
);
pusher.connection.bind('connected', () => emit({ type: 'connected', socket_id: pusher.connection.socket_id }));
pusher.connection.bind('error', (err) => emit({ type: 'connection_error', error: safe(err) }));
// Heartbeats: pusher-js answers a server pusher:ping itself and sends its own pusher:ping
// after activityTimeout of silence; the connection manager re-emits every decoded message.
pusher.connection.bind('message', (m) => {
  if (m.event === 'pusher:ping' || m.event === 'pusher:pong') emit({ type: 'heartbeat', event: m.event });
});

// --- pusher-js API -------------------------------------------------------------------------


// --- Laravel Echo API ----------------------------------------------------------------------

function echoChannel(cmd) {
  const kind = cmd.kind ?? 'public';
  let ch;
  let name;
  if (kind === 'public') {
    ch = echo.channel(cmd.channel);
    name = cmd.channel;
  } else if (kind === 'private') {
    ch = echo.private(cmd.channel);
    name = `private-${cmd.channel}`;
  } else if (kind === 'presence') {
    ch = echo.join(cmd.channel);
    name = `presence-${cmd.channel}`;
    ch.here((users) => emit({ type: 'echo_here', channel: name, users: safe(users) }))
      .joining((user) => emit({ type: 'echo_joining', channel: name, user: safe(user) }))
      .leaving((user) => emit({ type: 'echo_leaving', channel: name, user: safe(user) }));
  } else {
    throw new Error(`unknown channel kind ${kind}`);
  }
  ch.subscribed(() => emit({ type: 'echo_subscribed', channel: name }));
  ch.error((error) => emit({ type: 'echo_error', channel: name, error: safe(error) }));
  for (const listener of cmd.listen ?? []) {
    ch.listen(listener, (data, metadata) =>
      emit({ type: 'echo_event', channel: name, listener, data: safe(data), metadata: safe(metadata ?? null) }),
    );
  }
  for (const whisper of cmd.whispers ?? []) {
    ch.listenForWhisper(whisper, (data, metadata) =>
      emit({ type: 'echo_whisper', channel: name, whisper, data: safe(data), metadata: safe(metadata ?? null) }),
    );
  }
  return name;
}

function echoFind(cmd) {
  const kind = cmd.kind ?? 'public';
  if (kind === 'private') return echo.private(cmd.channel);
  if (kind === 'presence') return echo.join(cmd.channel);
  return echo.channel(cmd.channel);
}

// --- command loop --------------------------------------------------------------------------

function run(cmd) {
  switch (cmd.cmd) {
    case 'subscribe': {
      const channel = pusher.subscribe(cmd.channel);
      observeChannel(channel, cmd.channel);
      for (const event of cmd.bind ?? []) bindEvent(cmd.channel, event);
      return null;
    }
    case 'bind':
      bindEvent(cmd.channel, cmd.event);
      return null;
    case 'unsubscribe':
      pusher.unsubscribe(cmd.channel);
      return null;
    case 'trigger': {
      const channel = pusher.channel(cmd.channel);
      if (!channel) throw new Error(`not subscribed to ${cmd.channel}`);
      return channel.trigger(cmd.event, cmd.data);
    }
    case 'members': {
      const channel = pusher.channel(cmd.channel);
      if (!channel) throw new Error(`not subscribed to ${cmd.channel}`);
      return membersOf(channel.members);
    }
    case 'state':
      return { state: pusher.connection.state, socket_id: pusher.connection.socket_id ?? null };
    case 'disconnect':
      if (echo) echo.disconnect();
      else pusher.disconnect();
      return null;
    case 'echo_channel':
      return echoChannel(cmd);
    case 'whisper':
      echoFind(cmd).whisper(cmd.event, cmd.data);
      return null;
    case 'leave':
      echo.leave(cmd.channel);
      return null;
    case 'socket_id':
      return echo ? echo.socketId() ?? null : pusher.connection.socket_id ?? null;
    case 'exit':
      process.exit(0);
      return null;
    default:
      throw new Error(`unknown command ${cmd.cmd}`);
  }
}

serveCommands(run);
