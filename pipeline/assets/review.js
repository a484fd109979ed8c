/* The review app's page (pipeline review): verdicts, notes, re-rolls, linked players, filters
   and live updates (server-sent events). Plain JS, no library. Every state-changing request
   carries the session token the server put in <meta name="review-token">. */
"use strict";
(() => {
  const token = document.querySelector('meta[name="review-token"]').content;
  const board = document.getElementById("board");
  const flashBox = document.getElementById("flash");
  const live = document.getElementById("live");
  const dialog = document.getElementById("reroll-dialog");
  let flashTimer = 0;
  let outputs = null;

  function flash(text, bad) {
    flashBox.textContent = text;
    flashBox.classList.toggle("bad", Boolean(bad));
    flashBox.classList.add("show");
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => flashBox.classList.remove("show"), 4000);
  }

  async function post(path, body) {
    const res = await fetch(path, {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-Review-Token": token},
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    let data = {};
    try {
      data = await res.json();
    } catch (e) {
      data = {};
    }
    if (!res.ok) throw new Error(data.error || `${res.status} ${res.statusText}`);
    return data;
  }

  function shotOf(el) {
    const card = el.closest("article.card");
    return card ? card.dataset.shot : null;
  }

  // ----- verdicts, notes, re-rolls --------------------------------------------------------

  async function verdict(button) {
    const shot = shotOf(button);
    const act = button.dataset.act;
    const on = button.getAttribute("aria-pressed") !== "true";
    button.disabled = true;
    try {
      const body = act === "pick" ? {shot, picked: on} : {shot, rejected: on};
      flash((await post(`/api/${act}`, body)).message);
    } catch (err) {
      flash(`${act}: ${err.message}`, true);
    } finally {
      button.disabled = false;
    }
  }

  async function reroll(shot) {
    const res = await fetch(`/api/quote?shot=${encodeURIComponent(shot)}`);
    const quote = await res.json();
    if (!res.ok) {
      flash(`re-roll: ${quote.error}`, true);
      return;
    }
    const field = (name) => dialog.querySelector(`[data-field="${name}"]`);
    field("shot").textContent = shot;
    field("take").textContent = quote.new_take;
    field("price").textContent = quote.price;
    field("source").textContent = quote.source;
    field("budget").textContent = quote.budget;
    const warning = field("warning");
    warning.hidden = quote.fits !== false;
    warning.textContent = quote.usd === null
      ? "Its price is unknown: with a budget, the spend guard will hold it back."
      : "It does not fit the budget left: the spend guard will hold it back.";
    dialog.returnValue = "";
    dialog.showModal();
    dialog.addEventListener("close", async () => {
      if (dialog.returnValue !== "confirm") return;
      try {
        flash((await post("/api/reroll", {shot, confirm: true})).message);
      } catch (err) {
        flash(`re-roll: ${err.message}`, true);
      }
    }, {once: true});
  }

  document.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-act]");
    if (button && board.contains(button)) {
      if (button.dataset.act === "reroll") reroll(shotOf(button));
      else verdict(button);
      return;
    }
    const sync = ev.target.closest("button[data-sync]");
    if (sync) {
      const group = sync.closest(".group");
      if (sync.dataset.sync === "play") playAll(group, null);
      else pauseAll(group, null);
    }
  });

  document.addEventListener("submit", async (ev) => {
    const form = ev.target.closest("form.note");
    if (!form) return;
    ev.preventDefault();
    const shot = shotOf(form);
    const typed = form.querySelector("textarea").value;
    const text = typed.trim();
    if (!text) return;
    try {
      flash((await post("/api/note", {shot, text})).message);
      const card = document.getElementById(shot); // an update may have replaced the form
      const area = card && card.querySelector(".note textarea");
      if (area && area.value === typed) area.value = "";
    } catch (err) {
      flash(`note: ${err.message}`, true);
    }
  });

  // ----- takes side by side: linked play, pause and scrubbing -----------------------------

  // video -> the event types ("play", "pause", "seeked") we caused and it has not fired yet:
  // per type, so that a user's play right after a linked seek is not taken for ours
  const driven = new WeakMap();
  const expect = (v, type) => {
    const types = driven.get(v) || new Set();
    types.add(type);
    driven.set(v, types);
  };
  const caused = (v, type) => {
    const types = driven.get(v);
    return Boolean(types && types.delete(type));
  };
  const videosOf = (group) => [...group.querySelectorAll("video.take")];
  const linked = (group) => {
    const box = group.querySelector(".linked-on");
    return !box || box.checked;
  };
  const fraction = (v) => (v.duration ? v.currentTime / v.duration : 0);

  function seekAll(group, frac, except) {
    for (const v of videosOf(group)) {
      if (v === except || !v.duration) continue;
      if (Math.abs(fraction(v) - frac) < 0.005) continue;
      expect(v, "seeked");
      v.currentTime = frac * v.duration;
    }
  }

  function playAll(group, except) {
    const start = except ? fraction(except) : null;
    for (const v of videosOf(group)) {
      if (v === except || !v.paused) continue;
      if (start !== null && v.duration && Math.abs(fraction(v) - start) >= 0.005) {
        expect(v, "seeked");
        v.currentTime = start * v.duration;
      }
      expect(v, "play");
      v.play().catch(() => caused(v, "play"));
    }
  }

  function pauseAll(group, except) {
    for (const v of videosOf(group)) {
      if (v === except || v.paused) continue;
      expect(v, "pause");
      v.pause();
    }
  }

  function onMedia(ev) {
    const v = ev.target;
    if (!(v instanceof HTMLVideoElement)) return;
    const group = v.closest(".group.takes");
    if (ev.type === "timeupdate") {
      const scrub = group && group.querySelector(".scrub");
      if (scrub && document.activeElement !== scrub) scrub.value = Math.round(fraction(v) * 1000);
      return;
    }
    if (caused(v, ev.type)) return;
    if (!group || !linked(group)) return;
    if (ev.type === "play") playAll(group, v);
    else if (ev.type === "pause") pauseAll(group, v);
    else if (ev.type === "seeked") seekAll(group, fraction(v), v);
  }
  for (const type of ["play", "pause", "seeked", "timeupdate"]) {
    document.addEventListener(type, onMedia, true); // media events do not bubble
  }

  document.addEventListener("input", (ev) => {
    if (ev.target.matches(".scrub")) {
      seekAll(ev.target.closest(".group"), ev.target.value / 1000, null);
    }
  });

  // ----- filters by state and scene ------------------------------------------------------

  function applyFilters() {
    const boxes = document.querySelectorAll('input[name="state"]:checked');
    const states = new Set([...boxes].map((box) => box.value));
    const scene = document.querySelector('select[name="scene"]').value;
    for (const section of board.querySelectorAll("section.scene")) {
      const sceneOn = !scene || section.dataset.scene === scene;
      let anyGroup = false;
      for (const group of section.querySelectorAll(".group")) {
        let anyCard = false;
        for (const card of group.querySelectorAll("article.card")) {
          const on = sceneOn && states.has(card.dataset.state);
          card.hidden = !on;
          anyCard = anyCard || on;
        }
        group.hidden = !anyCard;
        anyGroup = anyGroup || anyCard;
      }
      section.hidden = !anyGroup;
    }
  }
  document.addEventListener("change", (ev) => {
    if (ev.target.matches('input[name="state"], select[name="scene"]')) applyFilters();
  });

  // ----- live updates ---------------------------------------------------------------------

  function fragment(html) {
    const tpl = document.createElement("template");
    tpl.innerHTML = html;
    return tpl.content.firstElementChild;
  }

  function patchCard(old, fresh) {
    if (old.dataset.video !== fresh.dataset.video) { // a new clip (or none): a new player
      old.replaceWith(fresh);
      return;
    }
    old.className = fresh.className;
    old.dataset.state = fresh.dataset.state;
    const frame = old.querySelector(".frame");
    frame.querySelectorAll(".tag").forEach((tag) => tag.remove());
    fresh.querySelectorAll(".frame .tag").forEach((tag) => frame.append(tag));
    const area = old.querySelector(".note textarea");
    const typed = area ? area.value : "";
    const focused = area && document.activeElement === area;
    old.querySelector(".body").replaceWith(fresh.querySelector(".body"));
    const again = old.querySelector(".note textarea");
    if (again) {
      again.value = typed;
      if (focused) again.focus();
    }
  }

  function applyGroup(update) {
    const old = board.querySelector(`.group[data-key="${CSS.escape(update.key)}"]`);
    if (!old) return;
    const fresh = fragment(update.html);
    const have = [...old.querySelectorAll("article.card")].map((c) => c.dataset.shot);
    if (have.join("\n") !== update.takes.join("\n")) { // a take came (a re-roll): new group
      old.replaceWith(fresh);
      return;
    }
    const head = old.querySelector(".group-head");
    const freshHead = fresh.querySelector(".group-head");
    if (head && freshHead) head.replaceWith(freshHead);
    for (const card of [...fresh.querySelectorAll("article.card")]) {
      const mine = old.querySelector(`article.card[data-shot="${CSS.escape(card.dataset.shot)}"]`);
      if (mine) patchCard(mine, card);
    }
  }

  function applyUpdate(update) {
    board.dataset.version = update.version;
    const stats = document.querySelector(".stats");
    if (stats) stats.replaceWith(fragment(update.stats));
    document.getElementById("budget").textContent = update.budget;
    update.groups.forEach(applyGroup);
    applyFilters();
    if (outputs !== null && update.outputs !== outputs) {
      flash(update.outputs_error
        ? `could not rebuild the outputs: ${update.outputs_error}`
        : "outputs rebuilt: page, contact sheet, animatic, report", Boolean(update.outputs_error));
    }
    outputs = update.outputs;
    document.body.dataset.outputs = update.outputs;
  }

  function connect() {
    const source = new EventSource(`/events?since=${encodeURIComponent(board.dataset.version)}`);
    source.onopen = () => {
      live.dataset.live = "on";
      live.textContent = "live";
    };
    source.onerror = () => {
      live.dataset.live = "off";
      live.textContent = "reconnecting…";
    };
    source.addEventListener("update", (ev) => applyUpdate(JSON.parse(ev.data)));
  }

  applyFilters();
  connect();
})();
