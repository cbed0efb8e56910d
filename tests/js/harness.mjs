// What every Node driver of the test suite shares: JSON-safe copies of pusher-js objects, one JSON
// observation per stdout line, and the stdin command loop (one JSON command per line, answered by
// {"type":"ack","id":…,"result"|"error":…}). Closing stdin ends the process: the test is over.
import readline from 'node:readline';

export function safe(value) {
  // JSON-able copy of anything pusher-js hands us (errors may hold sockets with cycles).
  const seen = new WeakSet();
  try {
    return JSON.parse(
      JSON.stringify(value ?? null, (k, v) => {
        if (v instanceof Error) return { name: v.name, message: v.message };
        if (typeof v === 'object' && v !== null) {
          if (seen.has(v)) return '[cycle]';
          seen.add(v);
        }
        if (typeof v === 'function') return undefined;
        return v;
      }),
    );
  } catch (e) {
    return String(value);
  }
}

export function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

export function membersOf(members) {
  if (!members) return null;
  return { count: members.count, me: safe(members.me), members: safe(members.members) };
}

export function observeChannel(channel, name) {
  channel.bind_global((event, data) => {
    switch (event) {
      case 'pusher:subscription_succeeded':
        if (name.startsWith('presence-')) emit({ type: 'subscription_succeeded', channel: name, members: membersOf(data) });
        else emit({ type: 'subscription_succeeded', channel: name, data: safe(data) });
        break;
      case 'pusher:subscription_error':
        emit({ type: 'subscription_error', channel: name, data: safe(data) });
        break;
      case 'pusher:member_added':
        emit({ type: 'member_added', channel: name, member: safe(data) });
        break;
      case 'pusher:member_removed':
        emit({ type: 'member_removed', channel: name, member: safe(data) });
        break;
      default:
        emit({ type: 'event', channel: name, event, data: safe(data) });
    }
  });
}

export function bindEvent(pusher, name, event) {
  const channel = pusher.channel(name);
  if (!channel) throw new Error(`not subscribed to ${name}`);
  channel.bind(event, (data, metadata) =>
    emit({ type: 'bound', channel: name, event, data: safe(data), metadata: safe(metadata ?? null) }),
  );
}

export function serveCommands(run) {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    if (!line.trim()) return;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (e) {
      emit({ type: 'ack', id: null, error: `bad command JSON: ${e.message}` });
      return;
    }
    try {
      const result = await run(cmd);
      emit({ type: 'ack', id: cmd.id ?? null, result: safe(result ?? null) });
    } catch (e) {
      emit({ type: 'ack', id: cmd.id ?? null, error: String(e && e.message ? e.message : e) });
    }
  });
  rl.on('close', () => process.exit(0));
}

// pusher-js options for a plain-ws reverbpy on loopback, from the harness's JSON config.
export function wsOptions(config) {
  const options = {
    cluster: '',
    wsHost: config.host ?? '127.0.0.1',
    wsPort: config.port,
    wssPort: config.port,
    forceTLS: false,
    enabledTransports: ['ws'],
  };
  if (config.wsPath) options.wsPath = config.wsPath;
  return options;
}
