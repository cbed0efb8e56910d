// Shared browser setup: one Laravel Echo instance over the real pusher-js, configured from the
// server's REVERB_* settings (#echo-config), plus the connection indicator that follows
// pusher-js state changes. Pages call window.bookingRealtime.connect(authParams).
(function () {
  "use strict";

  const LABELS = { connected: "Connected", connecting: "Connecting…", disconnected: "Disconnected" };
  // pusher-js states -> the three the indicator shows.
  const STATES = {
    initialized: "connecting",
    connecting: "connecting",
    connected: "connected",
    unavailable: "disconnected",
    failed: "disconnected",
    disconnected: "disconnected",
  };

  function setIndicator(state) {
    document.querySelectorAll('[data-testid="connection-status"]').forEach(function (el) {
      el.dataset.state = state;
      el.querySelector(".label").textContent = LABELS[state];
    });
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function connect(authParams) {
    const config = JSON.parse(document.getElementById("echo-config").textContent);
    // The IIFE build exposes the module namespace as `Echo`; the class is its default export.
    const EchoClass = window.Echo.default;
    const echo = new EchoClass(Object.assign({}, config, {
      Pusher: window.Pusher,
      csrfToken: csrfToken(),
      auth: { headers: {}, params: authParams || {} },
    }));
    const connection = echo.connector.pusher.connection;
    // Amber only until the first connection. After a drop pusher-js says "connecting" for up to
    // its unavailableTimeout (10 s) before "unavailable", but nothing arrives meanwhile: red.
    let everConnected = false;
    function show(state) {
      if (state === "connected") everConnected = true;
      const shown = STATES[state] || "connecting";
      setIndicator(shown === "connecting" && everConnected ? "disconnected" : shown);
    }
    show(connection.state);
    connection.bind("state_change", function (change) { show(change.current); });
    window.echo = echo;
    return echo;
  }

  // JSON fetch with the CSRF token and Echo's socket id (X-Socket-ID: the server's toOthers()).
  function postJson(url, body) {
    const headers = {
      "Content-Type": "application/json",
      Accept: "application/json",
      "X-CSRF-TOKEN": csrfToken(),
    };
    const socketId = window.echo && window.echo.socketId();
    if (socketId) headers["X-Socket-ID"] = socketId;
    return fetch(url, { method: "POST", headers: headers, body: JSON.stringify(body), credentials: "same-origin" });
  }

  window.bookingRealtime = { connect: connect, postJson: postJson, csrfToken: csrfToken };
})();
