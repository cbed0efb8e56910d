// Live dashboard: counters, feed and orders table driven by `order.created` and
// `order.status.changed` on private-admin.orders. All views are rendered from one map of orders,
// so the counters are right after any sequence of events, duplicates included.
(function () {
  "use strict";

  const initial = JSON.parse(document.getElementById("dashboard-state").textContent);
  const STATUSES = initial.statuses;
  const FEED_LIMIT = 25;
  const orders = new Map(); // id -> order payload
  const $ = function (sel, root) { return (root || document).querySelector(sel); };

  const feed = $('[data-testid="orders-feed"]');
  const feedEmpty = $(".feed-empty");
  const tbody = $('[data-testid="orders-table"] tbody');
  const toast = $('[data-testid="dashboard-toast"]');

  // ---- formatting --------------------------------------------------------------------------
  const dayFmt = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });
  const timeFmt = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit" });
  const stampFmt = new Intl.DateTimeFormat("en-GB", { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
  function day(iso) { return dayFmt.format(new Date(iso + "T00:00:00Z")); }
  function dates(o) { return day(o.check_in) + " → " + day(o.check_out) + " · " + o.nights + (o.nights === 1 ? " night" : " nights"); }
  function when(iso) {
    // Today's orders show the time; older ones (the seeded history) show the day too.
    const moment = new Date(iso);
    return moment.toDateString() === new Date().toDateString() ? timeFmt.format(moment) : stampFmt.format(moment);
  }
  function formatIdr(amount) {
    // Same as the server's rules.format_idr, in case a payload lacks total_formatted.
    return "Rp " + String(Math.abs(amount)).replace(/\B(?=(\d{3})+(?!\d))/g, ".");
  }
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(function (kv) {
      if (kv[0] === "text") node.textContent = kv[1];
      else if (kv[0] === "class") node.className = kv[1];
      else node.setAttribute(kv[0], kv[1]);
    });
    (children || []).forEach(function (c) { node.appendChild(c); });
    return node;
  }
  function badge(status) {
    return el("span", { class: "badge status-" + status, "data-testid": "status-badge", text: status });
  }

  // ---- counters ----------------------------------------------------------------------------
  function renderStats() {
    let pending = 0, confirmed = 0;
    orders.forEach(function (o) {
      if (o.status === "pending") pending++;
      else if (o.status === "confirmed") confirmed++;
    });
    setStat("stat-pending", pending);
    setStat("stat-confirmed", confirmed);
    setStat("stat-total", orders.size);
  }
  function setStat(testid, value) {
    const node = $('[data-testid="' + testid + '"]');
    if (node.textContent !== String(value)) {
      node.textContent = String(value);
      node.classList.remove("bump");
      void node.offsetWidth; // restart the CSS animation
      node.classList.add("bump");
    }
  }

  // ---- feed --------------------------------------------------------------------------------
  function addFeedItem(order, animate) {
    if (feed.querySelector('[data-order-id="' + order.id + '"]')) return;
    const item = el("li", { class: "feed-item" + (animate ? " enter" : ""), "data-testid": "feed-item", "data-order-id": order.id }, [
      el("div", { class: "feed-top" }, [
        el("strong", { class: "guest", text: order.guest_name }),
        badge(order.status),
      ]),
      el("div", { class: "feed-villa", text: order.villa_name }),
      el("div", { class: "feed-dates", text: dates(order) }),
      el("div", { class: "feed-bottom" }, [
        el("span", { class: "price", "data-testid": "feed-total", text: order.total_formatted || formatIdr(order.total) }),
        el("time", { datetime: order.created_at, text: when(order.created_at) }),
      ]),
    ]);
    feed.insertBefore(item, feed.firstChild);
    while (feed.children.length > FEED_LIMIT) feed.removeChild(feed.lastChild);
    feedEmpty.hidden = true;
  }

  // ---- table -------------------------------------------------------------------------------
  function statusSelect(order) {
    const select = el("select", { "data-testid": "status-select", "aria-label": "Status of booking " + order.id });
    STATUSES.forEach(function (s) {
      const option = el("option", { value: s, text: s });
      if (s === order.status) option.selected = true;
      select.appendChild(option);
    });
    select.addEventListener("change", function () { changeStatus(order.id, select); });
    return select;
  }
  function upsertRow(order, highlight) {
    let row = tbody.querySelector('tr[data-order-id="' + order.id + '"]');
    if (!row) {
      row = el("tr", { "data-order-id": order.id }, [
        el("td", { text: "#" + order.id }),
        el("td", { text: order.guest_name }),
        el("td", { text: order.villa_name }),
        el("td", { text: dates(order) }),
        el("td", { class: "num", text: order.total_formatted || formatIdr(order.total) }),
        el("td", { class: "status-cell" }, [statusSelect(order)]),
        el("td", { text: stampFmt.format(new Date(order.created_at)) }),
      ]);
      // Keep newest (highest id) first even when a resync delivers rows out of order.
      let before = null;
      for (const other of tbody.rows) {
        if (Number(other.dataset.orderId) < order.id) { before = other; break; }
      }
      tbody.insertBefore(row, before);
    }
    row.dataset.status = order.status;
    const select = row.querySelector("select");
    if (select && select.value !== order.status && !select.disabled) select.value = order.status;
    if (highlight) {
      row.classList.remove("flash");
      void row.offsetWidth;
      row.classList.add("flash");
    }
  }

  // ---- state -------------------------------------------------------------------------------
  function apply(order, how) {
    const known = orders.get(order.id);
    // Stamps are fixed-width ISO strings: a late, older copy (say a resync racing an event)
    // must not undo a newer status.
    if (known && known.updated_at > order.updated_at) return;
    orders.set(order.id, order);
    upsertRow(order, how !== "initial" && (!known || known.status !== order.status));
    if (!known && how === "created") {
      addFeedItem(order, true);
      sound.play();
    }
    feed.querySelectorAll('[data-order-id="' + order.id + '"] [data-testid="status-badge"]').forEach(function (b) {
      b.className = "badge status-" + order.status;
      b.textContent = order.status;
    });
    renderStats();
  }

  function resync() {
    fetch("/admin/reservations.json", { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status)); })
      .then(function (data) {
        // Orders created while we were offline enter the feed; the rest just update in place.
        data.orders.slice().reverse().forEach(function (o) { apply(o, orders.has(o.id) ? "update" : "created"); });
      })
      .catch(function (err) { showToast("Could not refresh orders: " + err.message); });
  }

  function changeStatus(id, select) {
    const previous = orders.get(id).status;
    const wanted = select.value;
    select.disabled = true;
    window.bookingRealtime.postJson("/admin/reservations/" + id + "/status", { status: wanted })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) { return { ok: r.ok, body: body, status: r.status }; });
      })
      .then(function (res) {
        select.disabled = false;
        if (!res.ok) {
          select.value = previous;
          const msg = res.body.errors ? Object.values(res.body.errors).join(" ") : "HTTP " + res.status;
          showToast("Could not change #" + id + ": " + msg);
          return;
        }
        // Our own change is not echoed back to us (toOthers), so apply the response here.
        apply(res.body.order, "update");
      })
      .catch(function (err) {
        select.disabled = false;
        select.value = previous;
        showToast("Could not change #" + id + ": " + err.message);
      });
  }

  let toastTimer = null;
  function showToast(text) {
    toast.textContent = text;
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { toast.hidden = true; }, 6000);
  }

  // ---- sound (Web Audio, no asset) -----------------------------------------------------------
  const sound = (function () {
    const toggle = $('[data-testid="sound-toggle"]');
    const volume = $('[data-testid="sound-volume"]');
    let ctx = null;
    let muted = localStorage.getItem("booking.sound.muted") === "1";
    const storedVolume = parseFloat(localStorage.getItem("booking.sound.volume"));
    volume.value = String(isNaN(storedVolume) ? 0.5 : storedVolume);

    function render() {
      toggle.textContent = muted ? "♪ Muted" : "♪ Sound on";
      toggle.setAttribute("aria-pressed", String(muted));
      volume.disabled = muted;
    }
    function context() {
      if (!ctx) {
        const AudioCtx = window.AudioContext || window.webkitAudioContext;
        if (!AudioCtx) return null;
        ctx = new AudioCtx();
      }
      return ctx;
    }
    toggle.addEventListener("click", function () {
      muted = !muted;
      localStorage.setItem("booking.sound.muted", muted ? "1" : "0");
      render();
      if (!muted) play(); // a user gesture: the browser lets the context start now
    });
    volume.addEventListener("input", function () {
      localStorage.setItem("booking.sound.volume", volume.value);
    });
    function play() {
      if (muted) return;
      try {
        const ac = context();
        if (!ac) return;
        // Autoplay policy: resume() may be refused until the user interacts; that is fine.
        const resumed = ac.state === "suspended" ? ac.resume() : Promise.resolve();
        Promise.resolve(resumed).then(function () {
          const gain = ac.createGain();
          const t = ac.currentTime;
          const level = Math.max(0.0001, parseFloat(volume.value) || 0);
          gain.gain.setValueAtTime(0.0001, t);
          gain.gain.exponentialRampToValueAtTime(level, t + 0.02);
          gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.45);
          gain.connect(ac.destination);
          [880, 1320].forEach(function (freq, i) {
            const osc = ac.createOscillator();
            osc.type = "sine";
            osc.frequency.setValueAtTime(freq, t + i * 0.12);
            osc.connect(gain);
            osc.start(t + i * 0.12);
            osc.stop(t + 0.45);
          });
        }).catch(function () { /* autoplay blocked: stay silent */ });
      } catch (err) {
        /* no audio device or blocked: a missed beep must never break the dashboard */
      }
    }
    render();
    return { play: play };
  })();

  // ---- start -------------------------------------------------------------------------------
  initial.orders.slice().reverse().forEach(function (o) { apply(o, "initial"); });
  initial.orders.slice(0, 5).reverse().forEach(function (o) { addFeedItem(o, false); });

  const echo = window.bookingRealtime.connect();
  echo.private("admin.orders")
    .listen(".order.created", function (e) { apply(e.order, "created"); })
    .listen(".order.status.changed", function (e) { apply(e.order, "update"); })
    .subscribed(resync)
    .error(function (err) { showToast("Subscription refused: " + (err && err.status ? "HTTP " + err.status : "see console")); });
  window.dashboard = { orders: orders, resync: resync };
})();
