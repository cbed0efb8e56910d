// A pusher-js client with forceTLS, for the TLS tests (client.mjs always uses plain ws).
//
// Usage: NODE_EXTRA_CA_CERTS=cert.pem node tls_client.mjs '{"key":…,"host":…,"port":…}'
// Same line protocol as client.mjs, reduced to what the TLS test needs: the command
// {"cmd":"subscribe","channel":…,"id":…}; observations "connected", "connection_error",
// "subscription_succeeded", "event" and "ack".
import readline from 'node:readline';
import Pusher from 'pusher-js';

const config = JSON.parse(process.argv[2] ?? '{}');
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

Pusher.logToConsole = false;
Pusher.log = (msg) => process.stderr.write(`[pusher-js] ${msg}\n`);
const pusher = new Pusher(config.key, {
  cluster: '',
  wsHost: config.host ?? '127.0.0.1',
  wssPort: config.port,
  forceTLS: true,
  enabledTransports: ['ws', 'wss'],
});
pusher.connection.bind('connected', () => emit({ type: 'connected', socket_id: pusher.connection.socket_id }));
pusher.connection.bind('error', (err) =>
  emit({ type: 'connection_error', error: JSON.parse(JSON.stringify(err?.data ?? err?.error?.message ?? String(err))) }),
);

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const cmd = JSON.parse(line);
  if (cmd.cmd === 'subscribe') {
    pusher.subscribe(cmd.channel).bind_global((event, data) => {
      if (event === 'pusher:subscription_succeeded') emit({ type: 'subscription_succeeded', channel: cmd.channel });
      else emit({ type: 'event', channel: cmd.channel, event, data });
    });
  }
  emit({ type: 'ack', id: cmd.id ?? null, result: null });
});
rl.on('close', () => process.exit(0));
