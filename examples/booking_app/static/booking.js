// Guest page: the booking's status badge follows `order.status.changed` on private-order.{id}.
// The booking token from the page link proves ownership to /broadcasting/auth.
(function () {
  "use strict";
  const booking = JSON.parse(document.getElementById("booking-config").textContent);
  const badge = document.querySelector('[data-testid="booking-status"]');
  const notice = document.querySelector('[data-testid="booking-notice"]');
  const MESSAGES = {
    confirmed: "Good news: your booking has been confirmed!",
    cancelled: "Your booking has been cancelled.",
    completed: "Your stay is complete. Terima kasih!",
    pending: "Your booking is pending review again.",
  };
  let noticeTimer = null;

  function showStatus(status, announce) {
    if (badge.dataset.status === status) return;
    badge.dataset.status = status;
    badge.textContent = status;
    badge.className = "badge status-" + status + " pop";
    if (!announce) return;
    notice.textContent = MESSAGES[status] || "Your booking is now " + status + ".";
    notice.className = "notice status-" + status;
    notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(function () { notice.hidden = true; }, 15000);
  }

  const echo = window.bookingRealtime.connect({ booking_token: booking.token });
  const channel = echo.private("order." + booking.id);
  channel.listen(".order.status.changed", function (event) {
    showStatus(event.new_status, true);
  });
  // After every (re)subscription, re-read the status: events sent while offline are not replayed.
  channel.subscribed(function () {
    fetch("/bookings/" + booking.id + "/status.json?token=" + encodeURIComponent(booking.token), {
      headers: { Accept: "application/json" },
    })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) showStatus(data.order.status, true); })
      .catch(function () {});
  });
})();
