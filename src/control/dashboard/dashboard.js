// The streamgate dashboard: polls the System API's JSON routes once a second and shows
// streams (with bit-rate charts and players), origins (with drain and unregister) and shards.
// Everything it shows comes from /api/v1/streams, /api/v1/origins, /api/v1/shards and
// /api/v1/listeners; text from the API is only ever set as textContent.
'use strict';

(() => {
  const POLL_MS = 1000;
  const HISTORY = 60; // seconds of bit rate per chart
  const MAX_PAGES = 10; // pages of 1000 streams or origins followed per poll
  const TOKEN_KEY = 'streamgate-token';

  const $ = (id) => document.getElementById(id);
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    urls: null, // { http_stream, http_api }: where the players reach the proxy
    cards: new Map(), // stream key -> { el, parts, history, player }
    polls: 0,
  };

  // ---- small helpers ------------------------------------------------------------------

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === 'text') node.textContent = value;
      else if (name === 'class') node.className = value;
      else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function bits(kbps) {
    if (kbps >= 1000) return (kbps / 1000).toFixed(kbps >= 10000 ? 0 : 2) + ' Mb/s';
    return kbps + ' kb/s';
  }

  function bytes(n) {
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i === 0 ? n : n.toFixed(n >= 100 ? 0 : 1)) + ' ' + units[i];
  }

  function age(seconds) {
    if (seconds == null) return '–';
    if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + ' s';
    if (seconds < 3600) return Math.floor(seconds / 60) + ' min';
    if (seconds < 86400) return (seconds / 3600).toFixed(1) + ' h';
    return (seconds / 86400).toFixed(1) + ' d';
  }

  function setStatus(text, ok) {
    const s = $('status');
    s.textContent = text;
    s.className = 'status ' + (ok ? 'ok' : 'bad');
  }

  // ---- the API ------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, options) {
    const init = Object.assign({ cache: 'no-store' }, options || {});
    init.headers = Object.assign({}, init.headers || {});
    if (state.token) init.headers.Authorization = 'Bearer ' + state.token;
    const resp = await fetch(path, init);
    let body = null;
    try { body = await resp.json(); } catch (_) { body = null; }
    if (!resp.ok) {
      if (resp.status === 401) $('auth').hidden = false;
      throw new ApiError(resp.status, (body && body.error) || resp.status + ' ' + resp.statusText);
    }
    return body;
  }

  // A paged list: follows `next` for up to MAX_PAGES pages.
  async function list(path, field) {
    let url = path + '?limit=1000';
    const all = [];
    let total = 0;
    for (let page = 0; url && page < MAX_PAGES; page++) {
      const body = await api(url);
      all.push(...body[field]);
      total = body.total;
      url = body.next;
    }
    return { items: all, total };
  }

  function post(path, body) {
    return api(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  }

  // ---- polling ------------------------------------------------------------------------

  async function poll() {
    if (document.body.dataset.auth === 'on' && !state.token) {
      $('auth').hidden = false;
      setStatus('token needed', false);
      return; // useToken() polls again
    }
    try {
      if (!state.urls) {
        const l = await api('/api/v1/listeners');
        state.urls = l.urls;
      }
      const [streams, origins, shards] = await Promise.all([
        list('/api/v1/streams', 'streams'),
        list('/api/v1/origins', 'origins'),
        api('/api/v1/shards'),
      ]);
      renderStreams(streams);
      renderOrigins(origins, streams.items);
      renderShards(shards);
      state.polls++;
      document.body.dataset.polls = String(state.polls);
      $('auth').hidden = true;
      setStatus('live · ' + new Date().toLocaleTimeString(), true);
    } catch (e) {
      if (e.status === 401) {
        setStatus('wrong token', false);
        return; // a new token polls again
      }
      setStatus('error: ' + e.message, false);
    }
    state.timer = setTimeout(poll, POLL_MS);
  }

  async function version() {
    try {
      const v = await api('/api/v1/versions');
      $('version').textContent = v.version + (v.commit ? ' (' + String(v.commit).slice(0, 10) + ')' : '');
    } catch (_) { /* shown by the poll's status */ }
  }

  // ---- streams ------------------------------------------------------------------------

  // The stream key `vhost/app/.../stream` as the HTTP and WHEP URLs name it.
  function streamPath(key) {
    const slash = key.indexOf('/');
    const vhost = key.slice(0, slash);
    const path = key.slice(slash + 1);
    const cut = path.lastIndexOf('/');
    return {
      path: '/' + path,
      app: path.slice(0, cut),
      stream: path.slice(cut + 1),
      vhost: vhost === '__defaultVhost__' ? null : vhost,
    };
  }

  function renderStreams(streams) {
    const seen = new Set();
    for (const s of streams.items) {
      seen.add(s.key);
      let card = state.cards.get(s.key);
      if (!card) {
        card = makeCard(s.key);
        state.cards.set(s.key, card);
        $('streams').append(card.el);
      }
      updateCard(card, s);
    }
    for (const [key, card] of state.cards) {
      if (!seen.has(key)) {
        stopPlayer(card);
        card.el.remove();
        state.cards.delete(key);
      }
    }
    $('streams-empty').hidden = streams.items.length > 0;
    const shown = streams.items.length < streams.total ? ' (' + streams.items.length + ' shown)' : '';
    $('streams-count').textContent = streams.total + shown;
  }

  function makeCard(key) {
    const parts = {
      origin: el('dd', { class: 'origin' }),
      sessions: el('dd', { class: 'chips' }),
      rates: el('dd', {}, [el('span', { class: 'rate-in' }), ' in · ', el('span', { class: 'rate-out' }), ' out']),
      bytes: el('dd', {}),
      media: el('dd', { class: 'media' }),
      frames: el('dd', {}),
      edge: el('dd', { class: 'edge' }),
      edgeLabel: el('dt', { text: 'edge', hidden: '' }),
      ladder: el('dd', { class: 'ladder', hidden: '' }),
      ladderLabel: el('dt', { text: 'ladder', hidden: '' }),
      abr: el('button', { type: 'button', class: 'play-abr', text: 'ABR', hidden: '', title: 'the transcoded ladder (HLS)' }),
      chart: el('canvas', { class: 'chart', 'aria-label': 'bit rate, last ' + HISTORY + ' s' }),
      player: el('div', { class: 'player', hidden: '' }),
    };
    const card = { key, parts, history: [], player: null, master: null };
    const play = (kind) => () => startPlayer(card, kind);
    parts.abr.addEventListener('click', play('abr'));
    const disconnect = confirmButton('Disconnect', 'Disconnect all?', async () => {
      const r = await post('/api/v1/streams/disconnect', { key });
      return r.sessions + ' sessions closing';
    });
    const el_ = el('article', { class: 'card stream', 'data-key': key }, [
      el('h3', { text: key }),
      el('dl', { class: 'facts' }, [
        el('dt', { text: 'origin' }), parts.origin,
        el('dt', { text: 'sessions' }), parts.sessions,
        el('dt', { text: 'bit rate' }), parts.rates,
        el('dt', { text: 'bytes' }), parts.bytes,
        el('dt', { text: 'media' }), parts.media,
        el('dt', { text: 'frames' }), parts.frames,
        parts.edgeLabel, parts.edge,
        parts.ladderLabel, parts.ladder,
      ]),
      parts.chart,
      el('div', { class: 'actions' }, [
        el('button', { type: 'button', class: 'play-hls', text: 'HLS', onclick: play('hls') }),
        el('button', { type: 'button', class: 'play-flv', text: 'HTTP-FLV', onclick: play('flv') }),
        el('button', { type: 'button', class: 'play-whep', text: 'WebRTC', onclick: play('whep') }),
        parts.abr,
        el('button', { type: 'button', class: 'stop', text: 'Stop', onclick: () => stopPlayer(card) }),
        disconnect,
      ]),
      parts.player,
    ]);
    card.el = el_;
    return card;
  }

  function updateCard(card, s) {
    const p = card.parts;
    p.origin.textContent = s.origin || '(not pinned)';
    p.origin.dataset.origin = s.origin || '';
    const chips = Object.entries(s.sessions || {})
      .filter(([, n]) => n > 0)
      .map(([name, n]) => el('span', { class: 'chip', text: name.replace('_', ' ') + ' ' + n }));
    p.sessions.replaceChildren(...(chips.length ? chips : [el('span', { class: 'muted', text: 'none' })]));
    p.rates.children[0].textContent = bits(s.in_kbps);
    p.rates.children[1].textContent = bits(s.out_kbps);
    p.rates.dataset.inKbps = String(s.in_kbps);
    p.rates.dataset.outKbps = String(s.out_kbps);
    p.bytes.textContent = bytes(s.bytes_in) + ' in · ' + bytes(s.bytes_out) + ' out';
    const m = s.media;
    if (m) {
      const codecs = [m.video_codec, m.audio_codec].filter(Boolean).join(' + ') || 'unknown codecs';
      const size = m.width && m.height ? m.width + '×' + m.height : '';
      const fps = m.fps ? m.fps + ' fps' : (m.meta_fps ? m.meta_fps + ' fps (metadata)' : '');
      const audio = m.audio_sample_rate ? m.audio_sample_rate + ' Hz' + (m.audio_channels ? '/' + m.audio_channels + 'ch' : '') : '';
      p.media.textContent = [codecs, size, fps, audio, m.encoder].filter(Boolean).join(' · ');
      p.frames.textContent = m.video_frames + ' video, ' + m.audio_frames + ' audio, ' + m.keyframes +
        ' key, ' + m.dropped_frames + ' dropped' + (m.publishing ? ' · publishing ' + age(m.publishing_seconds) : ' · not publishing');
    } else {
      p.media.textContent = 'no RTMP publisher seen';
      p.frames.textContent = '–';
    }
    const edge = s.edge;
    p.edge.hidden = !edge;
    p.edgeLabel.hidden = !edge;
    if (edge) {
      p.edge.textContent = edge.pulls + ' pulls, ' + edge.players + ' players, ' + bytes(edge.cache_bytes) +
        ' cached, ' + edge.dropped_frames + ' frames dropped, lag up to ' + bytes(edge.max_lag_bytes);
    }
    updateLadder(card, s.transcode);
    card.history.push({ in: s.in_kbps, out: s.out_kbps });
    if (card.history.length > HISTORY) card.history.shift();
    drawChart(p.chart, card.history);
  }

  // The transcoding job's ladder (`transcode` of /api/v1/streams, absent when the stream has
  // no job): one chip per rung, then the job's state; the ABR button plays its master playlist.
  function updateLadder(card, t) {
    const p = card.parts;
    const profiles = t && Array.isArray(t.profiles) ? t.profiles : [];
    p.ladder.hidden = !t;
    p.ladderLabel.hidden = !t;
    p.abr.hidden = !(t && t.master);
    card.master = t ? t.master : null;
    if (!t) return;
    const chips = profiles.map((r) => el('span', {
      class: 'chip rung ' + r.status,
      'data-rung': r.name,
      title: r.codec + ' ' + r.width + '×' + r.height + ', ' + r.status,
      text: r.name + ' ' + bits(r.kbps),
    }));
    const job = [t.status, t.encoder, t.fps ? t.fps + ' fps' : '', t.speed ? 'speed ' + t.speed + '×' : '',
      t.dropped_frames ? t.dropped_frames + ' dropped' : ''].filter(Boolean).join(' · ');
    const line = [el('span', { class: 'chips' }, chips.length ? chips : [el('span', { class: 'muted', text: 'no rungs' })]),
      el('span', { class: 'muted', text: job })];
    if (t.problem) line.push(el('span', { class: 'bad', text: t.problem }));
    p.ladder.replaceChildren(...line);
    p.ladder.dataset.rungs = profiles.map((r) => r.name).join(' ');
  }

  function drawChart(canvas, history) {
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const h = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext('2d');
    const css = getComputedStyle(document.documentElement);
    ctx.clearRect(0, 0, w, h);
    const max = Math.max(1, ...history.map((p) => Math.max(p.in, p.out)));
    ctx.strokeStyle = css.getPropertyValue('--line');
    ctx.lineWidth = ratio;
    ctx.strokeRect(0.5, 0.5, w - 1, h - 1);
    const step = w / (HISTORY - 1);
    const offset = HISTORY - history.length;
    for (const [field, color] of [['out', '--out'], ['in', '--in']]) {
      ctx.strokeStyle = css.getPropertyValue(color);
      ctx.lineWidth = 1.5 * ratio;
      ctx.beginPath();
      history.forEach((p, i) => {
        const x = (offset + i) * step;
        const y = h - 2 * ratio - (p[field] / max) * (h - 14 * ratio);
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    }
    ctx.fillStyle = css.getPropertyValue('--muted');
    ctx.font = 10 * ratio + 'px system-ui, sans-serif';
    ctx.fillText('max ' + bits(max), 4 * ratio, 11 * ratio);
  }

  // ---- players ------------------------------------------------------------------------

  function playerUrls(card) {
    const u = state.urls || {};
    const s = streamPath(card.key);
    const vhost = s.vhost ? 'vhost=' + encodeURIComponent(s.vhost) : '';
    const q = (first) => (vhost ? first + vhost : '');
    return {
      hls: u.http_stream && u.http_stream + s.path + '.m3u8' + q('?'),
      flv: u.http_stream && u.http_stream + s.path + '.flv' + q('?'),
      whep: u.http_api && u.http_api + '/rtc/v1/whep/?app=' + encodeURIComponent(s.app) +
        '&stream=' + encodeURIComponent(s.stream) + q('&'),
      abr: u.http_stream && card.master && u.http_stream + card.master,
    };
  }

  function startPlayer(card, kind) {
    stopPlayer(card);
    const url = playerUrls(card)[kind];
    const box = card.parts.player;
    const video = el('video', { muted: '', playsinline: '', controls: '', autoplay: '' });
    video.muted = true;
    const label = kind.toUpperCase() + ' ' + (url || '');
    const note = el('p', { class: 'note', text: label });
    box.replaceChildren(video, note);
    box.hidden = false;
    box.dataset.kind = kind;
    delete box.dataset.error;
    const player = { kind, video, stop: () => {} };
    // A player's errors go into its note (and the box's data-error, which the tests read),
    // not the console; one that comes after the player was stopped or replaced is dropped.
    const fail = (message) => {
      if (card.player !== player) return;
      note.textContent = message;
      note.className = 'note bad';
      box.dataset.error = message;
    };
    player.show = (text) => { if (card.player === player && !box.dataset.error) note.textContent = label + ' · ' + text; };
    card.player = player;
    if (!url) return fail('the proxy did not say where its ' + (kind === 'whep' ? 'HTTP API' : 'HTTP stream') + ' listener is');
    // play() is refused (NotAllowedError) where the browser wants a gesture first; an
    // AbortError only says a new load or a pause came first, which is no failure.
    const play = () => video.play().catch((e) => { if (e.name !== 'AbortError') fail('press play: ' + e.message); });
    try {
      if (kind === 'hls') player.stop = playHls(video, url, play, fail);
      else if (kind === 'abr') player.stop = playHls(video, url, play, fail, player.show);
      else if (kind === 'flv') player.stop = playFlv(video, url, play, fail);
      else player.stop = playWhep(video, url, play, fail);
    } catch (e) {
      fail(e.message);
    }
  }

  function stopPlayer(card) {
    const player = card.player;
    if (!player) return;
    card.player = null;
    try { player.stop(); } catch (_) { /* already gone */ }
    player.video.removeAttribute('src');
    player.video.srcObject = null;
    card.parts.player.replaceChildren();
    card.parts.player.hidden = true;
  }

  // HLS with hls.js (or the browser's own where it has no Media Source Extensions); `show`,
  // for a ladder, is told which rung plays.
  function playHls(video, url, play, fail, show) {
    if (window.Hls && window.Hls.isSupported()) {
      const hls = new window.Hls({ liveDurationInfinity: true });
      hls.on(window.Hls.Events.ERROR, (_, data) => {
        if (data.fatal) fail('HLS: ' + data.type + ' ' + data.details);
      });
      hls.on(window.Hls.Events.MANIFEST_PARSED, play);
      if (show) {
        hls.on(window.Hls.Events.LEVEL_SWITCHED, (_, data) => {
          const level = hls.levels[data.level];
          if (level) show('playing ' + (level.height ? level.height + 'p' : 'rung ' + data.level) + ' of ' + hls.levels.length);
        });
      }
      hls.loadSource(url);
      hls.attachMedia(video);
      return () => hls.destroy();
    }
    if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.src = url;
      play();
      return () => {};
    }
    throw new Error('this browser cannot play HLS (no Media Source Extensions)');
  }

  function playFlv(video, url, play, fail) {
    const mpegts = window.mpegts;
    if (!mpegts || !mpegts.getFeatureList().mseLivePlayback) {
      throw new Error('this browser cannot play HTTP-FLV (no Media Source Extensions)');
    }
    quietMpegts(mpegts);
    const player = mpegts.createPlayer({ type: 'flv', isLive: true, url }, { enableStashBuffer: false });
    player.on(mpegts.Events.ERROR, (type, detail) => fail('HTTP-FLV: ' + type + ' ' + detail));
    flvFails.add(fail);
    player.attachMediaElement(video);
    player.load();
    play();
    return () => {
      flvFails.delete(fail);
      player.pause(); player.unload(); player.detachMediaElement(); player.destroy();
    };
  }

  // mpegts.js logs to the console by itself (its info lines every few seconds); that is turned
  // off, and its error lines go to the notes of the HTTP-FLV players playing instead (its log
  // is one for the page, so a line cannot be told apart by player).
  const flvFails = new Set();
  let mpegtsQuiet = false;
  function quietMpegts(mpegts) {
    if (mpegtsQuiet) return;
    mpegtsQuiet = true;
    mpegts.LoggingControl.applyConfig({ enableAll: false, enableError: false });
    mpegts.LoggingControl.addLogListener((level, text) => {
      if (level === 'error') for (const fail of flvFails) fail('HTTP-FLV: ' + text);
    });
  }

  // WHEP (RFC 9725): one POST of the complete offer, the answer in the body, DELETE at the end.
  function playWhep(video, url, play, fail) {
    const pc = new RTCPeerConnection();
    let resource = null;
    let stopped = false;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const stream = new MediaStream();
    pc.ontrack = (e) => {
      stream.addTrack(e.track);
      if (video.srcObject !== stream) { video.srcObject = stream; play(); }
    };
    pc.onconnectionstatechange = () => {
      video.dataset.connection = pc.connectionState;
      if (pc.connectionState === 'failed') fail('WebRTC: the connection failed');
    };
    (async () => {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, 2000);
      const headers = { 'Content-Type': 'application/sdp' };
      const resp = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp });
      const answer = await resp.text();
      if (!resp.ok) throw new Error(resp.status + ' ' + answer.trim());
      const location = resp.headers.get('Location');
      if (location) resource = new URL(location, url).href;
      if (!stopped) await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    })().catch((e) => fail('WebRTC: ' + e.message));
    return () => {
      stopped = true;
      pc.close();
      if (resource) fetch(resource, { method: 'DELETE' }).catch(() => {});
    };
  }

  function gathered(pc, limit) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === 'complete') resolve(); };
      pc.addEventListener('icegatheringstatechange', done);
      setTimeout(resolve, limit);
    });
  }

  // A button that asks once more before it acts; shows what the action answered. While its
  // request is out it is `busy` (the origins table is not redrawn under it).
  function confirmButton(label, armedLabel, action) {
    let timer = null;
    const button = el('button', { type: 'button', class: 'danger', text: label });
    button.addEventListener('click', async () => {
      if (button.classList.contains('busy')) return;
      if (!button.classList.contains('armed')) {
        button.classList.add('armed');
        button.textContent = armedLabel;
        timer = setTimeout(() => { button.classList.remove('armed'); button.textContent = label; }, 4000);
        return;
      }
      clearTimeout(timer);
      button.classList.remove('armed');
      await busy(button, action);
      setTimeout(() => { button.textContent = label; }, 3000);
    });
    return button;
  }

  async function busy(button, action) {
    button.classList.add('busy');
    button.disabled = true;
    try {
      button.textContent = await action();
    } catch (e) {
      button.textContent = 'failed: ' + e.message;
    }
    button.disabled = false;
    button.classList.remove('busy');
  }

  // ---- origins ------------------------------------------------------------------------

  function renderOrigins(origins, streams) {
    const byOrigin = new Map();
    for (const s of streams) {
      if (!s.origin) continue;
      if (!byOrigin.has(s.origin)) byOrigin.set(s.origin, []);
      byOrigin.get(s.origin).push(s.key);
    }
    const rows = origins.items.map((o) => {
      const stateText = [o.alive ? 'alive' : 'dead'];
      if (o.draining) stateText.push('draining');
      if (o.quarantined_seconds != null) stateText.push('quarantined ' + age(o.quarantined_seconds));
      if (o.overloaded) stateText.push('overloaded');
      if (!o.proven) stateText.push('unproven');
      if (o.load_per_cpu != null) stateText.push('load ' + o.load_per_cpu.toFixed(2));
      const cls = o.draining ? 'draining' : o.alive ? 'alive' : 'dead';
      const endpoints = Object.entries(o.endpoints || {})
        .filter(([, list]) => list.length)
        .map(([name, list]) => name + ' ' + list.join(', '))
        .join(' · ');
      const keys = byOrigin.get(o.id) || [];
      const streamsText = keys.length ? keys.length + ': ' + keys.slice(0, 5).join(', ') + (keys.length > 5 ? ', …' : '') : '0';
      const drain = el('button', { type: 'button', text: o.draining ? 'Resume' : 'Drain' });
      drain.addEventListener('click', () => busy(drain, async () => {
        const r = await post('/api/v1/origins/drain', { id: o.id, draining: !o.draining });
        return r.draining ? 'draining' : 'resumed';
      }));
      const unregister = confirmButton('Unregister', 'Unregister?', async () => {
        await post('/api/v1/srs/unregister', { id: o.id });
        return 'unregistered';
      });
      return el('tr', { 'data-origin': o.id }, [
        el('td', { class: 'wrap' }, [el('div', {}, [el('strong', { text: o.id }), el('br'), el('span', { class: 'muted', text: o.ip + (o.device_id ? ' · ' + o.device_id : '') })])]),
        el('td', { class: cls, text: stateText.join(', ') }),
        el('td', { text: age(o.heartbeat_age_seconds) + ' ago' }),
        el('td', { class: 'wrap', text: endpoints }),
        el('td', { class: 'wrap', text: streamsText }),
        el('td', {}, [el('div', { class: 'actions' }, [drain, unregister])]),
      ]);
    });
    // Keep a row whose action button is waiting for its confirmation.
    const body = $('origins').tBodies[0];
    if (!body.querySelector('button.armed, button.busy')) {
      body.replaceChildren(...rows);
      labelCells($('origins'));
    }
    $('origins-count').textContent = String(origins.total);
  }

  // Each cell gets its column's name (data-label), which the phone layout shows beside it
  // in place of the table's head.
  function labelCells(table) {
    const names = [...table.tHead.rows[0].cells].map((th) => th.textContent);
    for (const row of table.tBodies[0].rows) {
      [...row.cells].forEach((td, i) => { td.dataset.label = names[i] || ''; });
    }
  }

  // ---- shards -------------------------------------------------------------------------

  function pairs(map) {
    const e = Object.entries(map || {}).filter(([, n]) => n > 0);
    return e.length ? e.map(([k, n]) => k + ' ' + n).join(', ') : '–';
  }

  function sum(map) {
    return Object.values(map || {}).reduce((a, b) => a + b, 0);
  }

  function shardRow(name, s) {
    const t = s.udp_tables;
    return el('tr', {}, [
      el('td', { text: name }),
      el('td', { text: String(s.open) }),
      el('td', { class: 'wrap', text: pairs(s.open_by_listener) }),
      el('td', { text: String(sum(s.accepted)) }),
      el('td', { text: [s.panicked, s.stalled, s.idle, s.refused].map(sum).join(' / ') }),
      el('td', { class: 'wrap', text: pairs(s.pick_failures) }),
      el('td', { text: t ? t.srt_sessions + ' / ' + t.webrtc_sessions : '–' }),
      el('td', { text: s.report_age_seconds === undefined ? '' : age(s.report_age_seconds) + ' ago' }),
    ]);
  }

  function renderShards(body) {
    const rows = body.shards.map((s) => shardRow(String(s.index), s));
    rows.push(shardRow('total', body.total));
    $('shards').tBodies[0].replaceChildren(...rows);
    labelCells($('shards'));
    $('uptime').textContent = 'up ' + age(body.uptime_seconds);
    $('bytes').textContent = 'Since start: ' + (Object.entries(body.bytes_by_protocol || {})
      .map(([p, b]) => p + ' ' + bytes(b.bytes_in) + ' in, ' + bytes(b.bytes_out) + ' out')
      .join(' · ') || 'no bytes yet');
  }

  // ---- start --------------------------------------------------------------------------

  function useToken() {
    state.token = $('token').value.trim();
    if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
    else sessionStorage.removeItem(TOKEN_KEY);
    state.urls = null;
    clearTimeout(state.timer);
    version();
    poll();
  }

  $('token-use').addEventListener('click', useToken);
  $('token').addEventListener('keydown', (e) => { if (e.key === 'Enter') useToken(); });
  window.addEventListener('resize', () => {
    for (const card of state.cards.values()) drawChart(card.parts.chart, card.history);
  });
  version();
  poll();
})();
