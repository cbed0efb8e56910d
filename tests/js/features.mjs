// A real pusher-js client for the Pusher features client.mjs does not drive: user sign-in
// (userAuthentication.customHandler), server-to-user events, the watchlist, encrypted channels,
// cache channels, presence with a signed-in user. Driven by tests/functional/test_real_peers_features.py.
//
// pusher-js's Node build (`import Pusher from 'pusher-js'` → dist/node/pusher.js) bundles tweetnacl
// and so supports `private-encrypted-` channels; `pusher-js/with-encryption` is the *web* build.
//
// Usage: node features.mjs '<config JSON>'
//   config: {
//     key, host, port, wsPath?,
//     authEndpoint?: "http://…/broadcasting/auth",        channel authorization (pusher-js ajax transport)
//     userAuthEndpoint?: "http://…/broadcasting/user-auth", where the userAuthentication customHandler
//                                                          fetches {auth, user_data}
//     user?: "alice"                                       which user the app's endpoint signs in
//   }
//
// Protocol (same as client.mjs): one JSON command per stdin line, one JSON observation per stdout
// line; every command's outcome is {"type":"ack","id":…,"result"|"error":…}.
//   Observations:
//     {"type":"state",previous,current,socket_id}, {"type":"connected",socket_id},
//     {"type":"connection_error",error}                   every pusher.connection 'error'
//     {"type":"closed",code,reason}                        the WebSocket close the transport saw
//     {"type":"message",event,channel,data,user_id}        every pusher:* / pusher_internal:* frame as
//                                                          pusher-js decoded it (before any decryption)
//     {"type":"user_auth",socket_id,status,response}       the customHandler's round trip
//     {"type":"signin_error",data}                         pusher.user 'pusher:signin_error'
//     {"type":"user_event",event,data}                     pusher.user.bind(event, …)
//     {"type":"watchlist",name,event}                      pusher.user.watchlist.bind(name, …)
//     {"type":"subscription_succeeded",channel,data|members}, {"type":"subscription_error",channel,data},
//     {"type":"member_added"|"member_removed",channel,member}
//     {"type":"event",channel,event,data}                  other channel events (bind_global)
//     {"type":"bound",channel,event,data,metadata}         channel.bind(event, …) callbacks
import { bindEvent as bindOn, emit, membersOf, observeChannel, safe, serveCommands, wsOptions } from './harness.mjs';

const bindEvent = (name, event) => bindOn(pusher, name, event);
import Pusher from 'pusher-js';

const config = JSON.parse(process.argv[2] ?? '{}');


// The app's userAuthentication custom handler: ask the app's backend (a Python endpoint signing
// with the official SDK) for {auth, user_data}, as a browser app would with its own fetch.
async function userAuthHandler(params, callback) {
  try {
    const body = new URLSearchParams({ socket_id: params.socketId, user: config.user ?? '' });
    const resp = await fetch(config.userAuthEndpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body,
      signal: AbortSignal.timeout(5000),
    });
    const text = await resp.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch (e) {
      json = null;
    }
    emit({ type: 'user_auth', socket_id: params.socketId, status: resp.status, response: json ?? text });
    if (!resp.ok || json === null) {
      callback(new Error(`user auth endpoint answered ${resp.status}: ${text}`), null);
      return;
    }
    callback(null, json);
  } catch (e) {
    emit({ type: 'user_auth', socket_id: params.socketId, status: null, response: String(e) });
    callback(e, null);
  }
}

const options = wsOptions(config);
if (config.authEndpoint) {
  options.channelAuthorization = { endpoint: config.authEndpoint, transport: 'ajax', params: { user: config.user ?? '' } };
}
if (config.userAuthEndpoint) {
  options.userAuthentication = { customHandler: userAuthHandler };
}

Pusher.logToConsole = false;
Pusher.log = (msg) => process.stderr.write(`[pusher-js] ${msg}\n`);

const pusher = new Pusher(config.key, options);

pusher.connection.bind('state_change', (s) =>
  emit({ type: 'state', previous: s.previous, current: s.current, socket_id: pusher.connection.socket_id ?? null }),
);
pusher.connection.bind('connected', () => {
  emit({ type: 'connected', socket_id: pusher.connection.socket_id });
  // The close code itself: the transport under this connection reports it with its 'closed' state.
  try {
    const transport = pusher.connection.connection.transport;
    transport.bind('closed', (ev) => emit({ type: 'closed', code: ev?.code ?? null, reason: ev?.reason ?? null }));
  } catch (e) {
    process.stderr.write(`cannot watch the transport close: ${e}\n`);
  }
});
pusher.connection.bind('error', (err) => emit({ type: 'connection_error', error: safe(err) }));
pusher.connection.bind('message', (m) => {
  if (m.event.startsWith('pusher:') || m.event.startsWith('pusher_internal:')) {
    emit({ type: 'message', event: m.event, channel: m.channel ?? null, data: safe(m.data), user_id: m.user_id ?? null });
  }
});
pusher.user.bind('pusher:signin_error', (data) => emit({ type: 'signin_error', data: safe(data) }));


async function run(cmd) {
  switch (cmd.cmd) {
    case 'signin':
      pusher.signin();
      return null;
    case 'signin_done': {
      // Resolves once signin succeeded or failed (pusher-js never rejects it).
      await pusher.user.signinDonePromise;
      return { user_data: safe(pusher.user.user_data) };
    }
    case 'user':
      return {
        user_data: safe(pusher.user.user_data),
        server_to_user: pusher.user.serverToUserChannel
          ? { name: pusher.user.serverToUserChannel.name, subscribed: pusher.user.serverToUserChannel.subscribed }
          : null,
      };
    case 'bind_user':
      pusher.user.bind(cmd.event, (data) => emit({ type: 'user_event', event: cmd.event, data: safe(data) }));
      return null;
    case 'bind_watchlist':
      pusher.user.watchlist.bind(cmd.name, (event) => emit({ type: 'watchlist', name: cmd.name, event: safe(event) }));
      return null;
    case 'subscribe': {
      const channel = pusher.subscribe(cmd.channel);
      observeChannel(channel, cmd.channel);
      for (const event of cmd.bind ?? []) bindEvent(cmd.channel, event);
      return null;
    }
    case 'bind':
      bindEvent(cmd.channel, cmd.event);
      return null;
    case 'members': {
      const channel = pusher.channel(cmd.channel);
      if (!channel) throw new Error(`not subscribed to ${cmd.channel}`);
      return membersOf(channel.members);
    }
    case 'state':
      return { state: pusher.connection.state, socket_id: pusher.connection.socket_id ?? null };
    case 'disconnect':
      pusher.disconnect();
      return null;
    case 'exit':
      process.exit(0);
      return null;
    default:
      throw new Error(`unknown command ${cmd.cmd}`);
  }
}

serveCommands(run);
