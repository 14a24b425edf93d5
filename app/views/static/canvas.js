// DeRIS Studio annotation canvas (gr.HTML js_on_load; `element`, `props`, `server`, `trigger`, `watch`).
// The picture and every mask are drawn here; edits never wait for the server. After each edit the new
// target set is written into props.value.edit and the 'edit' event tells the server (verdict, save).
(() => {
  const root = element.querySelector('.dc-root');
  const cv = element.querySelector('.dc-canvas');
  const ctx = cv.getContext('2d');
  const stage = element.querySelector('.dc-stage');
  const statusEl = element.querySelector('.dc-status');
  const listEl = element.querySelector('.dc-list');
  const toolsEl = element.querySelector('.dc-tools');
  const emptyEl = element.querySelector('.dc-empty');
  const versionsEl = document.createElement('span');  // Review's before / after switch (only for a fixed ref)
  versionsEl.className = 'dc-versions'; versionsEl.hidden = true;
  toolsEl.before(versionsEl);
  const MAX_UNDO = 50;
  const TOOLS = [  // key, name, title; new tools (e.g. point / box prompts) are added to this list
    ['v', 'select', 'Select: click an object to add it, click a target to remove it; Shift+click selects (V)'],
    ['b', 'brush', 'Brush: paint the selected instance, or a new one (B; size [ ])'],
    ['e', 'eraser', 'Eraser: erase from the selected instance, or from all (E; size [ ])'],
    ['p', 'polygon', 'Polygon: click vertices, Enter closes and adds (P)'],
    ['k', 'cut', 'Cut polygon: click vertices, Enter closes and cuts (K)'],
    ['o', 'outline', 'Outline: drag a vertex of the selected target\'s outline; click a target, or another part of it, to outline that part (O; Esc drops a drag)'],
  ];  // the outline tool's handlers are in static/outline.js
  const S = {
    readonly: __READONLY__, seq: null, doc: null, key: null, loadToken: 0, loading: null, W: 0, H: 0, img: null, imgKey: null,
    predKey: null, cands: [], palette: [], targets: [], noTarget: false, sel: -1, tool: 'select',
    brush: 12, opacity: 0.45, scale: 1, tx: 0, ty: 0, hover: -1, undo: [], redo: [], poly: [],
    mouse: null, space: false, pan: null, stroke: null, lastStroke: null, lastPolygon: null, ops: 0,
    labels: [], ov: null, ed: null, hv: null, base: null, pending: null, message: '', extraTools: [],
    versions: null, version: 'after',  // read-only: {before, after} target sets of a fixed ref (Review), the one shown
    next: null,  // the picture PgDn will open, fetched and decoded ahead: {key, img, w, h} (loadUpcoming)
    typed: null, typedSeen: null, typedGen: 0, typedPending: false,  // the typed expression's answer loaded ahead: {key, cands} (watchTyped)
  };
  element.__canvas = S;  // for tests and for tools added later (S.extraTools, S.api)

  // ---- COCO compressed RLE (column-major), as pycocotools writes it -------------------------------
  function rleCounts(s) {
    const cnts = []; let p = 0;
    while (p < s.length) {
      let x = 0, k = 0, more = 1;
      while (more) {
        const c = s.charCodeAt(p) - 48; x |= (c & 0x1f) << (5 * k); more = c & 0x20; p++; k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (cnts.length > 2) x += cnts[cnts.length - 2];
      cnts.push(x);
    }
    return cnts;
  }
  function decodeRle(s) {
    const W = S.W, H = S.H, m = new Uint8Array(W * H); let i = 0, v = 0;
    for (const n of rleCounts(s)) {
      if (v) for (let j = i; j < i + n; j++) { const x = (j / H) | 0; m[(j - x * H) * W + x] = 1; }
      i += n; v ^= 1;
    }
    return m;
  }
  function encodeRle(m) {
    const W = S.W, H = S.H, cnts = []; let prev = 0, run = 0;
    for (let x = 0; x < W; x++) for (let y = 0; y < H; y++) {
      const v = m[y * W + x]; if (v !== prev) { cnts.push(run); run = 0; prev = v; } run++;
    }
    cnts.push(run);
    let s = '';
    for (let i = 0; i < cnts.length; i++) {
      let x = cnts[i]; if (i > 2) x -= cnts[i - 2]; let more = 1;
      while (more) {
        let c = x & 0x1f; x >>= 5; more = (c & 0x10) ? x !== -1 : x !== 0;
        if (more) c |= 0x20; s += String.fromCharCode(c + 48);
      }
    }
    return s;
  }
  // row-major runs for the undo history (small and fast)
  function packRuns(m) {
    const out = []; let prev = 0, run = 0;
    for (let i = 0; i < m.length; i++) { if (m[i] !== prev) { out.push(run); run = 0; prev = m[i]; } run++; }
    out.push(run); return Uint32Array.from(out);
  }
  function unpackRuns(r) {
    const m = new Uint8Array(S.W * S.H); let i = 0, v = 0;
    for (const n of r) { if (v) m.fill(1, i, i + n); i += n; v ^= 1; }
    return m;
  }

  // ---- targets, labels, colours ---------------------------------------------------------------------
  function candByID(id) { return S.cands.find((c) => c.id === id); }
  function candMask(c) { if (!c.mask) c.mask = decodeRle(c.rle); return c.mask; }
  function relabel() {
    let drawn = 0;
    for (const t of S.targets) {
      const c = t.candidate != null ? candByID(t.candidate) : null;
      if (t.fixed) { t.label = t.fixed; t.colour = S.palette[(parseInt(t.fixed, 10) - 1) % S.palette.length] || [255, 0, 102]; }
      else if (c) { t.label = c.label; t.colour = c.colour; }
      else { drawn++; t.label = 'D' + drawn; t.colour = S.palette[(11 - drawn % 6) % S.palette.length] || [255, 0, 102]; }
    }
  }
  function snapshot() {
    return { targets: S.targets.map((t) => ({ runs: packRuns(t.mask), candidate: t.candidate, edited: t.edited,
      visible: t.visible, fixed: t.fixed, prompts: t.prompts || null, prior: t.prior || null })), noTarget: S.noTarget, sel: S.sel };
  }
  function restore(snap) {
    S.targets = snap.targets.map((t) => ({ mask: unpackRuns(t.runs), candidate: t.candidate, edited: t.edited,
      visible: t.visible, rle: null, fixed: t.fixed, prompts: t.prompts, prior: t.prior }));
    S.noTarget = snap.noTarget; S.sel = snap.sel;
  }
  function pushUndo() {
    S.undo.push(snapshot()); if (S.undo.length > MAX_UNDO) S.undo.shift(); S.redo.length = 0;
  }
  function undo() {
    if (!S.undo.length) { say('Nothing to undo.'); return; }
    S.redo.push(snapshot()); restore(S.undo.pop()); changed('undone');
  }
  function redo() {
    if (!S.redo.length) { say('Nothing to redo.'); return; }
    S.undo.push(snapshot()); restore(S.redo.pop()); changed('redone');
  }

  // ---- the overlay: one fill layer and one outline layer for every visible target ---------------------
  function layer() { const c = document.createElement('canvas'); c.width = S.W; c.height = S.H; return c; }
  function rebuild(rect) {
    const W = S.W, H = S.H;
    if (!W) return;
    const [x0, y0, x1, y1] = rect ? [Math.max(0, rect[0]), Math.max(0, rect[1]), Math.min(W, rect[2]), Math.min(H, rect[3])]
      : [0, 0, W, H];
    if (x1 <= x0 || y1 <= y0) return;
    const w = x1 - x0, h = y1 - y0;
    const fill = new ImageData(w, h), edge = new ImageData(w, h);
    const vis = S.targets.filter((t) => t.visible && !S.noTarget);
    // each pixel shows the last visible target that covers it (its colour; its outline where the pixel is on
    // that target's border): find that owner in one tight pass per target, then colour each pixel once
    const owner = new Uint16Array(w * h);
    for (let k = 0; k < vis.length; k++) {
      const m = vis[k].mask, id = k + 1;
      for (let y = y0; y < y1; y++) {
        const row = y * W, o = (y - y0) * w - x0;
        for (let x = x0; x < x1; x++) if (m[row + x]) owner[o + x] = id;
      }
    }
    const masks = vis.map((t) => t.mask), fills = vis.map((t) => t.colour);
    const edges = vis.map((t) => (S.targets[S.sel] === t ? [255, 255, 255] : t.colour));
    const fd = fill.data, ed = edge.data;
    for (let y = y0; y < y1; y++) {
      const row = y * W, orow = (y - y0) * w - x0;
      for (let x = x0; x < x1; x++) {
        const id = owner[orow + x];
        if (!id) continue;
        const m = masks[id - 1], c = fills[id - 1], i = row + x, o = (orow + x) * 4;
        fd[o] = c[0]; fd[o + 1] = c[1]; fd[o + 2] = c[2]; fd[o + 3] = 255;
        if (x === 0 || y === 0 || x === W - 1 || y === H - 1 || !m[i - 1] || !m[i + 1] || !m[i - W] || !m[i + W]) {
          const e = edges[id - 1];
          ed[o] = e[0]; ed[o + 1] = e[1]; ed[o + 2] = e[2]; ed[o + 3] = 255;
        }
      }
    }
    S.ov.getContext('2d').putImageData(fill, x0, y0);
    S.ed.getContext('2d').putImageData(edge, x0, y0);
  }
  function setHover(i) {
    if (i === S.hover) return;
    S.hover = i;
    const g = S.hv.getContext('2d');
    g.clearRect(0, 0, S.W, S.H);
    if (i >= 0) {
      const c = S.cands[i], m = candMask(c), d = new ImageData(S.W, S.H), [r, gg, b] = c.colour;
      for (let j = 0; j < m.length; j++) if (m[j]) { const o = j * 4; d.data[o] = r; d.data[o + 1] = gg; d.data[o + 2] = b; d.data[o + 3] = 255; }
      g.putImageData(d, 0, 0);
    }
    draw();
  }

  // Label places: every connected part (8-connected, on a grid of at most 256 cells a side) gets a mark at
  // the cell farthest from its border (chamfer distance), the largest part the target's number.
  function parts(m) {
    const W = S.W, H = S.H, c = Math.max(1, Math.ceil(Math.max(W, H) / 256));
    const gw = Math.ceil(W / c), gh = Math.ceil(H / c), grid = new Uint8Array(gw * gh), cnt = new Uint32Array(gw * gh);
    for (let y = 0; y < H; y++) { const gy = ((y / c) | 0) * gw, row = y * W; for (let x = 0; x < W; x++) if (m[row + x]) cnt[gy + ((x / c) | 0)]++; }
    for (let i = 0; i < grid.length; i++) grid[i] = cnt[i] > 0 ? 1 : 0;
    const comp = new Int32Array(gw * gh).fill(-1), out = [];
    for (let s = 0; s < grid.length; s++) {
      if (!grid[s] || comp[s] >= 0) continue;
      const id = out.length, cells = [s]; comp[s] = id;
      for (let q = 0; q < cells.length; q++) {
        const i = cells[q], x = i % gw, y = (i / gw) | 0;
        for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx, ny = y + dy; if (nx < 0 || ny < 0 || nx >= gw || ny >= gh) continue;
          const j = ny * gw + nx; if (grid[j] && comp[j] < 0) { comp[j] = id; cells.push(j); }
        }
      }
      let px = 0, minx = gw, miny = gh, maxx = 0, maxy = 0;
      for (const i of cells) { px += cnt[i]; const x = i % gw, y = (i / gw) | 0; minx = Math.min(minx, x); maxx = Math.max(maxx, x); miny = Math.min(miny, y); maxy = Math.max(maxy, y); }
      // chamfer distance inside the part's box, background = not this part
      const bw = maxx - minx + 3, bh = maxy - miny + 3, d = new Float32Array(bw * bh).fill(0);
      for (const i of cells) { const x = i % gw - minx + 1, y = ((i / gw) | 0) - miny + 1; d[y * bw + x] = 1e9; }
      for (let y = 1; y < bh - 1; y++) for (let x = 1; x < bw - 1; x++) { const i = y * bw + x; if (d[i]) d[i] = Math.min(d[i], d[i - 1] + 1, d[i - bw] + 1, d[i - bw - 1] + 1.41, d[i - bw + 1] + 1.41); }
      let best = -1, bi = 0;
      for (let y = bh - 2; y >= 1; y--) for (let x = bw - 2; x >= 1; x--) { const i = y * bw + x; if (d[i]) { d[i] = Math.min(d[i], d[i + 1] + 1, d[i + bw] + 1, d[i + bw + 1] + 1.41, d[i + bw - 1] + 1.41); if (d[i] > best) { best = d[i]; bi = i; } } }
      const gx = bi % bw - 1 + minx, gy = ((bi / bw) | 0) - 1 + miny;
      out.push({ x: Math.min(W - 0.5, (gx + 0.5) * c), y: Math.min(H - 0.5, (gy + 0.5) * c), px });
    }
    out.sort((a, b) => b.px - a.px);
    return out;
  }
  function relabelParts() {
    S.labels = [];
    if (S.noTarget) return;
    S.targets.forEach((t, ti) => {
      if (!t.visible) return;
      const ps = parts(t.mask), total = ps.reduce((a, p) => a + p.px, 0);
      ps.forEach((p, k) => S.labels.push({ ti, text: t.label, colour: t.colour, x: p.x, y: p.y, main: k === 0,
        tiny: k > 0 && (p.px < 16 || p.px < 0.02 * total), n: ps.length }));
    });
  }

  // ---- drawing --------------------------------------------------------------------------------------
  let frame = 0;
  function draw() { if (!frame) frame = requestAnimationFrame(() => { frame = 0; paint(); }); }
  function paint() {
    S.frames = (S.frames || 0) + 1;
    try { paintNow(); } finally { S.painted = performance.now(); }
    if (S.sendPending) { S.sendPending = false; setTimeout(sendBack, 0); }  // the picture first, then the server
  }
  function paintNow() {
    const cw = cv.width, ch = cv.height;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#1f2937'; ctx.fillRect(0, 0, cw, ch);
    if (!S.img) return;
    ctx.setTransform(S.scale, 0, 0, S.scale, S.tx, S.ty);
    ctx.imageSmoothingEnabled = S.scale < 1;  // crisp pixels when enlarged
    ctx.drawImage(S.img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.globalAlpha = S.opacity; ctx.drawImage(S.ov, 0, 0);
    ctx.globalAlpha = Math.max(0.6, S.opacity); ctx.drawImage(S.ed, 0, 0);
    if (S.hover >= 0) { ctx.globalAlpha = 0.35; ctx.drawImage(S.hv, 0, 0); }
    ctx.globalAlpha = 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    drawLabels();
    if (S.poly.length) {
      ctx.strokeStyle = S.tool === 'cut' ? '#f87171' : '#fde047'; ctx.lineWidth = 2; ctx.beginPath();
      S.poly.forEach(([x, y], i) => { const [sx, sy] = toScreen(x, y); i ? ctx.lineTo(sx, sy) : ctx.moveTo(sx, sy); });
      if (S.mouse) ctx.lineTo(S.mouse.sx, S.mouse.sy);
      ctx.stroke();
      S.poly.forEach(([x, y], i) => { const [sx, sy] = toScreen(x, y); ctx.fillStyle = i ? '#fff' : '#fde047'; ctx.fillRect(sx - 3, sy - 3, 6, 6); });
    }
    for (const t of S.extraTools) if (t.paint) t.paint(ctx, S);
    if (S.mouse && (S.tool === 'brush' || S.tool === 'eraser') && !S.readonly && !S.space) {
      ctx.beginPath(); ctx.arc(S.mouse.sx, S.mouse.sy, S.brush, 0, 2 * Math.PI);
      ctx.lineWidth = 2; ctx.strokeStyle = '#000'; ctx.stroke(); ctx.lineWidth = 1;
      ctx.strokeStyle = S.tool === 'eraser' ? '#f87171' : '#fff'; ctx.stroke();
    }
    if (S.version === 'before') {
      ctx.font = 'bold 14px sans-serif'; const tag = 'BEFORE: as rejected', tw = ctx.measureText(tag).width + 16;
      ctx.fillStyle = 'rgba(180,83,9,0.92)'; ctx.fillRect(8, 8, tw, 24);
      ctx.fillStyle = '#fff'; ctx.textBaseline = 'middle'; ctx.fillText(tag, 16, 21);
    }
    if (S.noTarget) {
      ctx.strokeStyle = '#b91c1c'; ctx.lineWidth = 8; ctx.strokeRect(4, 4, cw - 8, ch - 8);
      ctx.fillStyle = 'rgba(185,28,28,0.9)'; ctx.fillRect(cw / 2 - 90, 12, 180, 32);
      ctx.fillStyle = '#fff'; ctx.font = 'bold 18px sans-serif'; ctx.textAlign = 'center'; ctx.fillText('NO TARGET', cw / 2, 35);
      ctx.textAlign = 'start';
    }
  }
  function drawLabels() {
    const placed = [];
    const hit = (b) => placed.some((p) => b.x0 < p.x1 && b.x1 > p.x0 && b.y0 < p.y1 && b.y1 > p.y0);
    ctx.textBaseline = 'middle';
    for (const L of S.labels) {
      const [ax, ay] = toScreen(L.x, L.y);
      if (ax < -20 || ay < -20 || ax > cv.width + 20 || ay > cv.height + 20) continue;
      const size = L.main ? 15 : 11;
      ctx.font = `bold ${size}px sans-serif`;
      const text = L.main ? L.text : L.text + (L.tiny ? ' ·' : '');
      const w = ctx.measureText(text).width + 10, h = size + 8;
      let box = null;
      for (let ring = 0; ring < 8 && !box; ring++) {  // the anchor first, then rings around it
        const steps = ring === 0 ? [[0, 0]] : [[0, -1], [1, 0], [0, 1], [-1, 0], [1, -1], [1, 1], [-1, 1], [-1, -1]];
        for (const [dx, dy] of steps) {
          const cx = ax + dx * ring * (w * 0.6 + 2), cy = ay + dy * ring * (h * 0.8 + 2);
          const b = { x0: cx - w / 2, y0: cy - h / 2, x1: cx + w / 2, y1: cy + h / 2, cx, cy };
          if (!hit(b)) { box = b; break; }
        }
      }
      if (!box) continue;
      placed.push(box);
      if (box.cx !== ax || box.cy !== ay) {
        ctx.strokeStyle = '#fff'; ctx.lineWidth = 1; ctx.beginPath(); ctx.moveTo(ax, ay); ctx.lineTo(box.cx, box.cy); ctx.stroke();
      }
      if (L.tiny) { ctx.strokeStyle = '#fde047'; ctx.lineWidth = 2; ctx.beginPath(); ctx.arc(ax, ay, 9, 0, 2 * Math.PI); ctx.stroke(); }
      const [r, g, b] = L.colour;
      ctx.fillStyle = `rgba(${r},${g},${b},0.95)`; ctx.strokeStyle = S.targets[S.sel] && S.targets.indexOf(S.targets[S.sel]) === L.ti ? '#fff' : '#000';
      ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.roundRect(box.x0, box.y0, w, h, 5); ctx.fill(); ctx.stroke();
      ctx.fillStyle = (r * 0.3 + g * 0.59 + b * 0.11) > 150 ? '#000' : '#fff';
      ctx.fillText(text, box.x0 + 5, box.cy + 1);
    }
  }
  function toScreen(x, y) { return [x * S.scale + S.tx, y * S.scale + S.ty]; }
  function toImage(sx, sy) { return [(sx - S.tx) / S.scale, (sy - S.ty) / S.scale]; }
  function resize() {
    const r = stage.getBoundingClientRect();
    const w = Math.max(50, Math.round(r.width)), h = Math.max(50, Math.round(r.height));
    if (cv.width !== w || cv.height !== h) { cv.width = w; cv.height = h; if (S.fitOnResize) fit(); draw(); }
  }
  const FIT_MARGIN = 8;  // screen pixels left around the fitted picture, so that its edges can be clicked
  const EDGE_SNAP = 3;  // a polygon click this close to the picture's edge (screen pixels) is on the edge
  function fit() {
    if (!S.W) return;
    const m = Math.min(FIT_MARGIN, cv.width / 8, cv.height / 8);
    S.scale = Math.min((cv.width - 2 * m) / S.W, (cv.height - 2 * m) / S.H);
    S.tx = (cv.width - S.W * S.scale) / 2; S.ty = (cv.height - S.H * S.scale) / 2;
    S.fitOnResize = true; draw();
  }
  // a vertex clicked within EDGE_SNAP screen pixels of the picture's border (inside or out) goes on the
  // border: x = 0 or W, y = 0 or H, so a polygon can take the first and last rows and columns whole
  function snapToEdge(x, y) {
    const d = EDGE_SNAP / S.scale;
    const snap = (v, n) => (v > -d && v < d ? 0 : v > n - d && v < n + d ? n : v);
    return [snap(x, S.W), snap(y, S.H)];
  }
  function zoomAt(f, sx, sy) {
    const s = Math.min(64, Math.max(0.05, S.scale * f)); f = s / S.scale;
    S.tx = sx - (sx - S.tx) * f; S.ty = sy - (sy - S.ty) * f; S.scale = s; S.fitOnResize = false; draw();
  }

  // ---- rasterising (the same rules as app.views.canvas.stroke_mask / polygon_mask) --------------------
  function capsule(m, x0, y0, x1, y1, r, v) {
    const dx = x1 - x0, dy = y1 - y0, ll = dx * dx + dy * dy, r2 = r * r, W = S.W, H = S.H;
    const bx0 = Math.max(0, Math.floor(Math.min(x0, x1) - r - 1)), bx1 = Math.min(W, Math.ceil(Math.max(x0, x1) + r + 1));
    const by0 = Math.max(0, Math.floor(Math.min(y0, y1) - r - 1)), by1 = Math.min(H, Math.ceil(Math.max(y0, y1) + r + 1));
    for (let y = by0; y < by1; y++) for (let x = bx0; x < bx1; x++) {
      const cx = x + 0.5, cy = y + 0.5;
      let t = ll === 0 ? 0 : ((cx - x0) * dx + (cy - y0) * dy) / ll; t = Math.min(1, Math.max(0, t));
      const px = x0 + t * dx - cx, py = y0 + t * dy - cy;
      if (px * px + py * py <= r2) m[y * W + x] = v;
    }
    return [bx0, by0, bx1, by1];
  }
  function polygonFill(pts) {
    const W = S.W, H = S.H, m = new Uint8Array(W * H), n = pts.length;
    for (let y = 0; y < H; y++) {
      const yc = y + 0.5, xs = [];
      for (let i = 0; i < n; i++) {
        const [x0, y0] = pts[i], [x1, y1] = pts[(i + 1) % n];
        if ((y0 <= yc && yc < y1) || (y1 <= yc && yc < y0)) xs.push(x0 + (yc - y0) * (x1 - x0) / (y1 - y0));
      }
      xs.sort((a, b) => a - b);
      for (let i = 0; i + 1 < xs.length; i += 2) {
        const lo = Math.max(0, Math.ceil(xs[i] - 0.5)), hi = Math.min(W, Math.ceil(xs[i + 1] - 0.5));
        if (hi > lo) m.fill(1, y * W + lo, y * W + hi);
      }
    }
    return m;
  }

  // ---- edits ------------------------------------------------------------------------------------------
  function say(msg) { S.message = msg; status(); }
  function status() {
    const t = S.readonly ? 'read-only' + (S.versions ? (S.version === 'before' ? ' · before: as rejected' : ' · after: now') : '')
      : `tool: ${S.tool}` + ((S.tool === 'brush' || S.tool === 'eraser') ? ` · size ${S.brush}px` : '');
    const sel = S.targets[S.sel] ? ` · selected ${S.targets[S.sel].label}` : (S.readonly ? '' : ' · new instance');
    const z = S.W ? ` · ${S.W}×${S.H} at ${Math.round(S.scale * 100)}%` : '';
    statusEl.textContent = `${t}${sel}${z}${S.message ? ' — ' + S.message : ''}`;
    toolsEl.querySelectorAll('button').forEach((b) => b.classList.toggle('on', b.dataset.tool === S.tool));
  }
  function renderList() {
    listEl.innerHTML = '';
    S.targets.forEach((t, i) => {
      const chip = document.createElement('span');
      chip.className = 'dc-chip' + (i === S.sel ? ' sel' : '') + (t.visible ? '' : ' hidden');
      chip.dataset.index = i;
      const [r, g, b] = t.colour;
      const np = S.labels.filter((L) => L.ti === i).length;
      chip.innerHTML = `<i style="background:rgb(${r},${g},${b})"></i>${t.label}${t.edited ? ' ✎' : ''}${t.prompts && t.prompts.length ? ` <small>${t.prompts.length} prompt${t.prompts.length > 1 ? 's' : ''}</small>` : ''}${np > 1 ? ` <small>${np} parts</small>` : ''} <b class="eye" title="show / hide (H)">${t.visible ? 'hide' : 'show'}</b>`;
      chip.addEventListener('click', (e) => {
        if (e.target.classList.contains('eye')) { t.visible = !t.visible; relabelParts(); rebuild(); renderList(); draw(); return; }
        S.sel = i === S.sel ? -1 : i; rebuild(); renderList(); status(); draw();
      });
      listEl.appendChild(chip);
    });
    if (S.noTarget) listEl.insertAdjacentHTML('beforeend', '<span class="dc-chip nt">no target</span>');
    if (!S.targets.length && !S.noTarget && S.W) listEl.insertAdjacentHTML('beforeend', '<span class="dc-note">no targets yet</span>');
  }
  function changed(what, rect) {
    relabel(); S.ops++;
    for (const t of S.targets) if (rect === undefined) t.rle = null;
    rebuild(rect); relabelParts(); renderList(); say(what || ''); S.sendPending = true; draw();
  }
  function sendBack() {
    if (S.readonly || !S.base) return;
    const targets = S.targets.filter((t) => t.mask.some((v) => v)).map((t) => {
      if (t.candidate != null && !t.edited) return { candidate: t.candidate, edited: false };
      if (!t.rle) t.rle = encodeRle(t.mask);
      return t.prompts && t.prompts.length ? { rle: t.rle, candidate: t.candidate, edited: t.edited, prompts: t.prompts, prior: t.prior || null }
        : { rle: t.rle, candidate: t.candidate, edited: t.edited };
    });
    S.pending = { targets, no_target: S.noTarget, ops: S.ops };
    props.value = { ...S.base, edit: S.pending };
    trigger('edit');
  }
  function targetAt(x, y) {
    const i = Math.floor(y) * S.W + Math.floor(x);
    for (let k = S.targets.length - 1; k >= 0; k--) if (S.targets[k].visible && S.targets[k].mask[i]) return k;
    return -1;
  }
  function candidateAt(x, y) {
    if (x < 0 || y < 0 || x >= S.W || y >= S.H) return -1;
    const i = Math.floor(y) * S.W + Math.floor(x), taken = new Set(S.targets.map((t) => t.candidate));
    for (let k = 0; k < S.cands.length; k++) if (!taken.has(S.cands[k].id) && candMask(S.cands[k])[i]) return k;
    return -1;
  }
  function pick(x, y, shift) {
    if (x < 0 || y < 0 || x >= S.W || y >= S.H) return;
    const k = targetAt(x, y);
    if (shift) { S.sel = k; rebuild(); renderList(); status(); draw(); return; }
    if (k >= 0) { pushUndo(); const t = S.targets.splice(k, 1)[0]; S.sel = -1; changed(`removed ${t.label}`); return; }
    const c = candidateAt(x, y);
    if (c < 0) { say('No candidate covers that point: paint it (B) or outline it (P).'); return; }
    pushUndo();
    S.targets.push({ mask: candMask(S.cands[c]).slice(), candidate: S.cands[c].id, edited: false, visible: true, rle: null });
    S.noTarget = false; S.sel = S.targets.length - 1; setHover(-1); changed(`added ${S.cands[c].label}`);
  }
  function toggleCandidate(id) {  // for the candidate list (Alt+1..9 through the server keeps working too)
    const k = S.targets.findIndex((t) => t.candidate === id && !t.edited);
    pushUndo();
    if (k >= 0) S.targets.splice(k, 1);
    else { const c = candByID(id); if (!c) return; S.targets.push({ mask: candMask(c).slice(), candidate: id, edited: false, visible: true, rle: null }); S.noTarget = false; }
    changed();
  }
  function strokeStart(x, y) {
    pushUndo();
    let tgt = S.targets[S.sel];
    if (S.tool === 'brush' && !tgt) {
      tgt = { mask: new Uint8Array(S.W * S.H), candidate: null, edited: true, visible: true, rle: null };
      S.targets.push(tgt); S.sel = S.targets.length - 1; S.noTarget = false; relabel();
    }
    const r = S.brush / S.scale;
    S.stroke = { pts: [[x, y]], r, mode: S.tool, target: tgt };
    strokeTo(x, y);
  }
  function strokeTo(x, y) {
    const st = S.stroke, [px, py] = st.pts[st.pts.length - 1];
    if (st.pts.length > 1 || px !== x || py !== y) st.pts.push([x, y]);
    const masks = st.mode === 'brush' ? [st.target.mask] : (st.target ? [st.target.mask] : S.targets.map((t) => t.mask));
    let rect = null;
    for (const m of masks) rect = capsule(m, px, py, x, y, st.r, st.mode === 'brush' ? 1 : 0);
    for (const t of S.targets) if (masks.includes(t.mask)) { t.edited = true; t.rle = null; t.prompts = null; }
    if (rect) { rebuild(rect); draw(); }
  }
  function strokeEnd() {
    const st = S.stroke; S.stroke = null;
    S.lastStroke = { points: st.pts, radius: st.r, mode: st.mode };
    S.targets = S.targets.filter((t) => t.mask.some((v) => v));
    if (S.sel >= S.targets.length) S.sel = -1;
    changed(st.mode === 'brush' ? 'painted' : 'erased', null);
  }
  function closePolygon() {
    if (S.poly.length < 3) { say('A polygon needs at least 3 vertices.'); return; }
    const pts = S.poly.slice(); S.poly = [];
    const m = polygonFill(pts);
    S.lastPolygon = { points: pts, mode: S.tool };
    pushUndo();
    if (S.tool === 'cut') {
      const from = S.targets[S.sel] ? [S.targets[S.sel]] : S.targets;
      for (const t of from) { for (let i = 0; i < m.length; i++) if (m[i]) t.mask[i] = 0; t.edited = true; t.rle = null; t.prompts = null; }
      S.targets = S.targets.filter((t) => t.mask.some((v) => v));
      if (S.sel >= S.targets.length) S.sel = -1;
      changed('cut with the polygon');
    } else {
      let t = S.targets[S.sel];
      if (!t) { t = { mask: m, candidate: null, edited: true, visible: true, rle: null }; S.targets.push(t); S.sel = S.targets.length - 1; }
      else { for (let i = 0; i < m.length; i++) if (m[i]) t.mask[i] = 1; t.edited = true; t.rle = null; t.prompts = null; }
      S.noTarget = false;
      changed('outlined');
    }
  }
  function setTool(name) {
    if (S.readonly) return;
    S.tool = name; S.poly = [];
    stage.dataset.tool = name; status(); draw();
  }
  function newInstance() { S.sel = -1; rebuild(); renderList(); say('new instance: paint (B) or outline (P) it'); draw(); }
  function deleteInstance() {
    if (!S.targets[S.sel]) { say('Select an instance first (Shift+click or its chip).'); return; }
    pushUndo(); const t = S.targets.splice(S.sel, 1)[0]; S.sel = -1; changed(`deleted ${t.label}`);
  }
  function toggleNoTarget() {
    pushUndo(); S.noTarget = !S.noTarget; if (S.noTarget) { S.targets = []; S.sel = -1; }
    changed(S.noTarget ? 'marked: no target' : 'no-target mark removed');
  }
  // ---- before / after (read-only: a fixed ref's rejected version and the ref now) -----------------------
  function renderVersions() {
    versionsEl.hidden = !S.versions;
    if (!S.versions) { versionsEl.innerHTML = ''; return; }
    versionsEl.innerHTML = '';
    for (const [name, label, title] of [['before', 'before', 'The targets as they were rejected (B)'], ['after', 'after', 'The targets now, as fixed (B)']]) {
      const b = document.createElement('button'); b.className = 'dc-btn dc-version' + (S.version === name ? ' on' : '');
      b.dataset.version = name; b.title = title; b.innerHTML = label;
      b.addEventListener('click', () => showVersion(name)); versionsEl.appendChild(b);
    }
    versionsEl.insertAdjacentHTML('beforeend', '<kbd class="dc-kbd">B</kbd>');
  }
  function showVersion(name) {
    if (!S.versions || !S.versions[name]) return;
    S.version = name; S.targets = S.versions[name].targets; S.noTarget = S.versions[name].noTarget; S.sel = -1;
    relabel(); rebuild(); relabelParts(); renderList(); renderVersions(); status(); draw();
  }
  S.api = { showVersion, setTool, undo, redo, newInstance, deleteInstance, toggleNoTarget, toggleCandidate, fit, zoomAt, toScreen,
    toImage, encodeRle, decodeRle, closePolygon, say, draw, pushUndo, changed, candidateAt, targetAt, status, renderList, rebuild, relabel,
    polygonFill, watchTyped };

  // ---- the server's value -----------------------------------------------------------------------------
  async function load(v) {
    if (!v || !v.image) {
      // forget the picture and candidates too: the next value may bring the same ones back (Review: a queue that
      // emptied, then the same image's ref fixed), and they must be fetched again, not left blank
      S.base = null; S.img = null; S.imgKey = null; S.predKey = null; S.W = 0; S.targets = []; S.cands = []; S.labels = [];
      S.noTarget = false; S.versions = null; S.version = 'after'; renderVersions();
      emptyEl.style.display = ''; renderList(); status(); draw(); return;
    }
    if (v.edit || v.seq === S.seq) return;  // our own edit coming back
    S.typedGen++; S.typedPending = false;  // an answer came (Enter's, or another): the typed one is not awaited now
    const token = ++S.loadToken;
    let loaded; S.loading = new Promise((resolve) => { loaded = resolve; });
    S.seq = v.seq; S.readonly = v.readonly || __READONLY__; S.palette = v.palette || S.palette;
    root.classList.toggle('readonly', S.readonly);
    try {
      if (S.imgKey !== v.image) {
        let img;
        if (S.next && S.next.key === v.image && S.next.w === v.w && S.next.h === v.h) { img = S.next.img; S.next = null; }
        else {
          const uri = await server.canvas_image(v.image);
          if (!uri) throw new Error('the picture is no longer in the server\'s memory: reopen the image');
          img = new Image(); img.src = uri; await img.decode();
        }
        if (token !== S.loadToken) return;  // a newer value came meanwhile: it is the one shown
        S.img = img; S.imgKey = v.image; S.W = v.w; S.H = v.h;
        S.ov = layer(); S.ed = layer(); S.hv = layer(); S.hover = -1; fit();
      }
      if (S.predKey !== v.pred) {
        const cands = S.typed && S.typed.key === v.pred && S.typed.image === v.image ? S.typed.cands
          : v.pred ? (await server.canvas_masks(v.pred)) || [] : [];
        if (token !== S.loadToken) return;
        S.cands = cands; S.predKey = v.pred;
      }
      const sameDoc = S.doc === v.doc;
      if (sameDoc && S.base) pushUndo(); else { S.undo = []; S.redo = []; S.ops = 0; }
      S.doc = v.doc; S.base = { ...v }; delete S.base.edit;
      const fromValue = (t) => {
        const c = t.rle == null ? candByID(t.candidate) : null;
        // an instance's prompts and prior come back with it (kept in the server's session, not in the dataset)
        const pr = Array.isArray(t.prompts) && t.prompts.length ? { prompts: t.prompts, prior: t.prior || null } : {};
        return { mask: c ? candMask(c).slice() : decodeRle(t.rle), candidate: t.candidate, edited: !!t.edited, visible: true, rle: t.rle || null,
          fixed: t.label || null, ...pr };
      };
      S.targets = v.targets.map(fromValue);
      S.noTarget = !!v.no_target; S.sel = -1; S.poly = [];
      S.versions = S.readonly && v.before ? { after: { targets: S.targets, noTarget: S.noTarget },
        before: { targets: v.before.targets.map(fromValue), noTarget: !!v.before.no_target } } : null;
      S.version = 'after'; renderVersions();
      emptyEl.style.display = 'none';
      relabel(); rebuild(); relabelParts(); renderList(); say(''); draw();
      if (v.ticket) loadUpcoming(v.ticket, token);
    } catch (err) {
      say('Could not show the picture: ' + (err && err.message || err));  // the last picture stays
    } finally {  // keys held back meanwhile act once the newest value is shown
      if (token === S.loadToken) { S.loading = null; loaded(); } else if (S.loading) S.loading.then(loaded); else loaded();
    }
  }
  watch('value', () => load(props.value));

  // The picture PgDn will open: the server prepares it in the background after an image opens
  // (app/services/prefetch.py); the page asks for it now and then (ticket: the session's own name)
  // and fetches and decodes it, so that PgDn draws it without a transfer or a decode. A newer value
  // (another image, a new run) starts over; a picture that never comes costs a few small requests.
  const UPCOMING_WAITS_MS = [500, 500, 700, 1000, 1500, 2000, 3000, 4000, 5000, 8000, 12000, 20000];
  const TYPED_WAITS_MS = [150, 150, 200, 300, 400, 600, 800, 1200, 1600];
  async function loadUpcoming(ticket, token) {
    if (!server.canvas_upcoming) return;
    for (const wait of UPCOMING_WAITS_MS) {
      await new Promise((r) => setTimeout(r, wait));
      if (token !== S.loadToken) return;
      let up = null;
      try { up = await server.canvas_upcoming(ticket); } catch (err) { return; }  // a convenience only
      if (token !== S.loadToken) return;
      if (!up || !up.image) continue;
      if (up.image === S.imgKey || (S.next && S.next.key === up.image)) return;
      // not while the typed expression's answer is awaited: its run and the Enter after it come first
      for (let waited = 0; S.typedPending && waited < 5000; waited += 100) await new Promise((r) => setTimeout(r, 100));
      if (token !== S.loadToken) return;  // a newer value's loop takes over
      try {
        const uri = await server.canvas_image(up.image);
        if (!uri) return;
        const img = await createImageBitmap(await (await fetch(uri)).blob());
        // kept even when a run on this image came meanwhile: the key names the picture's content
        if (up.image !== S.imgKey) S.next = { key: up.image, img, w: up.w, h: up.h };
      } catch (err) { /* PgDn fetches it then */ }
      return;
    }
  }
  // The answer of the expression the annotator typed: the page sends the text after a typing pause
  // (app/ui.py, #speculate-btn) and calls watchTyped; the server runs it in the background and encodes the
  // candidates' masks (app/services/speculate.py, prepare_typed). The page asks for that answer's key
  // until a new one comes, fetches its masks and decodes the referred ones, so that Enter on the same
  // text draws them without a request. A newer typing pause starts over.
  async function watchTyped() {
    const ticket = S.base && S.base.ticket, image = S.imgKey;
    if (!server.canvas_typed || !ticket) return;
    const gen = ++S.typedGen;
    S.typedPending = true;
    try { await awaitTyped(ticket, image, gen); } finally { if (gen === S.typedGen) S.typedPending = false; }
  }
  async function awaitTyped(ticket, image, gen) {
    for (const wait of TYPED_WAITS_MS) {
      await new Promise((r) => setTimeout(r, wait));
      if (gen !== S.typedGen) return;
      let answer = null;
      try { answer = await server.canvas_typed(ticket); } catch (err) { return; }  // a convenience only
      if (image !== S.imgKey) return;  // another image: the answer was for the last one
      if (gen !== S.typedGen || !answer || !answer.pred || answer.pred === S.typedSeen) continue;
      S.typedSeen = answer.pred;
      if (answer.pred === S.predKey) return;  // Enter came first: shown already
      try {
        const cands = await server.canvas_masks(answer.pred);
        if (!cands || image !== S.imgKey) return;
        S.typed = { key: answer.pred, image, cands };
        for (const c of cands) if (c.referred) candMask(c);  // the targets Enter will draw, decoded ahead
      } catch (err) { /* Enter fetches them then */ }
      return;
    }
  }

  // ---- toolbar -----------------------------------------------------------------------------------------
  function addTool([key, name, title]) {
    const b = document.createElement('button'); b.className = 'dc-btn dc-tool'; b.dataset.tool = name;
    b.title = title; b.innerHTML = `${name} <kbd>${key.toUpperCase()}</kbd>`; b.addEventListener('click', () => setTool(name));
    toolsEl.appendChild(b);
  }
  if (!S.readonly) {
    TOOLS.forEach(addTool);
    for (const [label, fn, title] of [['new <kbd>N</kbd>', newInstance, 'New instance (N)'], ['delete <kbd>Del</kbd>', deleteInstance, 'Delete the selected instance (Delete)'],
      ['no target <kbd>X</kbd>', toggleNoTarget, 'Mark the expression as referring to nothing (X)'], ['↺', undo, 'Undo (Ctrl+Z)'], ['↻', redo, 'Redo (Ctrl+Shift+Z)']]) {
      const b = document.createElement('button'); b.className = 'dc-btn'; b.innerHTML = label; b.title = title;
      b.addEventListener('click', fn); toolsEl.appendChild(b);
    }
  }
  S.addTool = (spec, handlers) => { TOOLS.push(spec); S.extraTools.push({ name: spec[1], ...handlers }); addTool(spec); };
  element.querySelector('.dc-fit').addEventListener('click', fit);
  element.querySelector('.dc-zoom-in').addEventListener('click', () => zoomAt(1.25, cv.width / 2, cv.height / 2));
  element.querySelector('.dc-zoom-out').addEventListener('click', () => zoomAt(0.8, cv.width / 2, cv.height / 2));
  element.querySelector('.dc-opacity').addEventListener('input', (e) => { S.opacity = e.target.value / 100; draw(); });
  element.querySelector('.dc-help').title = S.readonly
    ? 'Wheel or + / − zoom, 0 fits, space-drag or middle-drag pans, H hides the selected instance, B switches a fixed ref between before (as rejected) and after.'
    : 'V select · B brush · E eraser · P polygon (Enter closes, Esc drops, Backspace takes a vertex back) · K cut · O outline (drag a vertex of the selected target; click a part to outline it) · [ ] brush size · N new instance · Delete removes it · X no target · H hide · Ctrl+Z / Ctrl+Shift+Z undo/redo · wheel, + − zoom · 0 fit · space-drag or middle-drag pan';

  // ---- mouse -------------------------------------------------------------------------------------------
  function pos(e) { const r = cv.getBoundingClientRect(); const sx = e.clientX - r.left, sy = e.clientY - r.top; const [x, y] = toImage(sx, sy); return { sx, sy, x, y }; }
  cv.addEventListener('contextmenu', (e) => e.preventDefault());
  cv.addEventListener('mousedown', (e) => {
    if (document.activeElement && ['INPUT', 'TEXTAREA'].includes(document.activeElement.tagName)) document.activeElement.blur();
    root.focus({ preventScroll: true });
    const p = pos(e); S.mouse = p;
    if (!S.img) return;
    if (e.button === 1 || (e.button === 0 && S.space)) { e.preventDefault(); S.pan = { sx: p.sx, sy: p.sy, tx: S.tx, ty: S.ty }; stage.classList.add('panning'); return; }
    const extra = S.readonly ? null : S.extraTools.find((t) => t.name === S.tool);
    if (extra && extra.down && (e.button === 0 || e.button === 2)) { extra.down(p, e, S); return; }  // 2: a right-click prompt
    if (e.button !== 0 || S.readonly) return;
    if (S.tool === 'select') pick(p.x, p.y, e.shiftKey);
    else if (S.tool === 'brush' || S.tool === 'eraser') strokeStart(p.x, p.y);
    else if (S.tool === 'polygon' || S.tool === 'cut') {
      if (S.poly.length >= 3) { const [fx, fy] = toScreen(...S.poly[0]); if (Math.hypot(fx - p.sx, fy - p.sy) < 8) { closePolygon(); return; } }
      S.poly.push(snapToEdge(p.x, p.y)); draw();
    }
  });
  window.addEventListener('mousemove', (e) => {
    if (!S.img) return;
    const p = pos(e);
    const inside = p.sx >= 0 && p.sy >= 0 && p.sx < cv.width && p.sy < cv.height;
    if (S.pan) { S.tx = S.pan.tx + p.sx - S.pan.sx; S.ty = S.pan.ty + p.sy - S.pan.sy; S.fitOnResize = false; draw(); return; }
    if (!inside && !S.stroke) { if (S.mouse) { S.mouse = null; setHover(-1); draw(); } return; }
    S.mouse = p; S.alt = e.altKey;
    if (S.stroke) { strokeTo(p.x, p.y); return; }
    const extra = S.extraTools.find((t) => t.name === S.tool);
    if (extra && extra.move) extra.move(p, e, S);
    if (S.tool === 'select' && !S.readonly && S.cands.length) setHover(targetAt(p.x, p.y) >= 0 ? -1 : candidateAt(p.x, p.y));
    draw();
  });
  window.addEventListener('mouseup', (e) => {
    if (S.pan) { S.pan = null; stage.classList.remove('panning'); }
    if (S.stroke) strokeEnd();
    const extra = S.extraTools.find((t) => t.name === S.tool);
    if (extra && extra.up && S.img) extra.up(pos(e), e, S);
  });
  cv.addEventListener('wheel', (e) => {
    if (!S.img) return; e.preventDefault();
    const p = pos(e);
    if (e.ctrlKey || e.altKey) {  // brush size with a modifier
      S.brush = Math.max(1, Math.min(200, Math.round(S.brush * (e.deltaY < 0 ? 1.15 : 1 / 1.15)))); status(); draw(); return;
    }
    zoomAt(Math.pow(1.0015, -e.deltaY), p.sx, p.sy);
  }, { passive: false });

  // ---- keys (only while this canvas is on screen, never while typing) ---------------------------------
  document.addEventListener('keydown', (e) => {
    if (element.offsetParent === null || !S.img) return;
    const typing = !!document.activeElement?.matches?.('input, textarea, select, [contenteditable]:not([contenteditable="false"])');
    if (typing) return;
    const mod = e.ctrlKey || e.metaKey, k = e.key.toLowerCase();
    const handled = () => { e.preventDefault(); e.stopImmediatePropagation(); };
    if (e.key === ' ' && !mod) { S.space = true; stage.classList.add('space'); handled(); return; }
    if (!mod && !e.altKey) {
      if (e.key === '+' || e.key === '=') { zoomAt(1.25, cv.width / 2, cv.height / 2); handled(); return; }
      if (e.key === '-' || e.key === '_') { zoomAt(0.8, cv.width / 2, cv.height / 2); handled(); return; }
      if (e.key === '0') { fit(); handled(); return; }
      if (k === 'b' && S.readonly && S.versions) { showVersion(S.version === 'before' ? 'after' : 'before'); handled(); return; }
      if (k === 'h' && S.targets[S.sel]) { const t = S.targets[S.sel]; t.visible = !t.visible; relabelParts(); rebuild(); renderList(); draw(); handled(); return; }
    }
    if (S.readonly) return;
    // an edit key while the server's new value is still loading acts on that value, once it is shown
    // (else the value arriving a moment later would silently undo it)
    if (S.loading && editKey(e, handled, true)) { handled(); S.loading.then(() => editKey(e, () => {})); return; }
    editKey(e, handled);
  }, true);
  // The editing keys; ``dryRun``: only say whether ``e`` is one of the built-in ones (a tool's own
  // keys, static/prompts.js and outline.js, act at once).
  function editKey(e, handled, dryRun = false) {
    const mod = e.ctrlKey || e.metaKey, k = e.key.toLowerCase();
    if (dryRun) {
      return (mod && (k === 'z' || k === 'y')) || (!mod && !e.altKey && (!!S.poly.length || TOOLS.some(([key]) => key === e.key)
        || ['[', ']', 'Delete', 'Backspace'].includes(e.key) || (k === 'n' && !e.shiftKey) || k === 'x'));
    }
    if (mod && k === 'z') { handled(); (e.shiftKey ? redo : undo)(); return true; }
    if (mod && k === 'y') { handled(); redo(); return true; }
    if (mod || e.altKey) return false;
    if (S.poly.length) {
      if (e.key === 'Enter') { handled(); closePolygon(); return true; }
      if (e.key === 'Escape') { handled(); S.poly = []; say('polygon dropped'); draw(); return true; }
      if (e.key === 'Backspace') { handled(); S.poly.pop(); draw(); return true; }
    }
    const extra = S.extraTools.find((t) => t.name === S.tool);
    if (extra && extra.key && extra.key(e, S)) { handled(); return true; }
    const tool = TOOLS.find(([key]) => key === e.key);
    if (tool) { handled(); setTool(tool[1]); return true; }
    if (e.key === '[' || e.key === ']') { handled(); S.brush = Math.max(1, Math.min(200, S.brush + (e.key === ']' ? 2 : -2))); status(); draw(); return true; }
    if (k === 'n' && !e.shiftKey) { handled(); newInstance(); return true; }
    if (e.key === 'Delete' || e.key === 'Backspace') { handled(); deleteInstance(); return true; }
    if (k === 'x') { handled(); toggleNoTarget(); return true; }
    return false;
  }
  document.addEventListener('keyup', (e) => { if (e.key === ' ') { S.space = false; stage.classList.remove('space'); } });

  new ResizeObserver(resize).observe(stage);
  resize(); status(); renderList();
  if (props.value) load(props.value);
})();
