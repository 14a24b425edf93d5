// The outline tool of the annotation canvas (issue 36): drag the vertices of a target's outline, as in CVAT
// or Label Studio. Runs after canvas.js in the same js_on_load; the O key and button are canvas.js's TOOLS.
// The outline is the outer contour of one part (8-connected) of the selected target: the part clicked, else
// the largest. It is traced along the pixels' edges (vertices on pixel corners, so its fill is the part,
// holes filled) and simplified (Ramer-Douglas-Peucker, 1 image pixel, at most MAX_VERTICES). Releasing a
// dragged vertex changes only the pixels between the old and the new outline, both filled by the polygon
// tool's rule (polygonFill): they take the new outline's side; holes and other parts stay. The same rule in
// Python: app.views.canvas.outline_edit_mask. S.outline.pts (the vertices shown) and S.lastOutline (the last
// drag: {before, after, index}) let tests compute the expected mask.
(() => {
  const S = element.__canvas;
  if (!S || S.readonly) return;
  const stage = element.querySelector('.dc-stage');
  const MAX_VERTICES = 200, EPS = 1;  // simplification tolerance in image pixels (raised while over the cap)
  const HIT = 8, HANDLE = 3, HOVER = 6, MIN_GAP = 7;  // screen pixels: grab radius, handle sizes, declutter gap
  S.outline = null;  // {t, mask, ops, sel, seed, pts, hover, drag}: valid while the target's mask is unchanged
  S.lastOutline = null;

  // ---- tracing ----------------------------------------------------------------------------------------
  // 8-connected parts: a label per pixel (0 = not the mask), each part's size and first pixel (raster order,
  // so its top-most, left-most pixel: where its outer contour starts).
  function partsOf(m) {
    const W = S.W, H = S.H, lab = new Int32Array(W * H), sizes = [0], firsts = [-1], queue = new Int32Array(W * H);
    for (let s = 0; s < m.length; s++) {
      if (!m[s] || lab[s]) continue;
      const id = sizes.length; let head = 0, tail = 0; queue[tail++] = s; lab[s] = id;
      while (head < tail) {
        const i = queue[head++], x = i % W, y = (i - x) / W;
        for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx, ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= W || ny >= H) continue;
          const j = ny * W + nx; if (m[j] && !lab[j]) { lab[j] = id; queue[tail++] = j; }
        }
      }
      sizes.push(tail); firsts.push(s);
    }
    return { lab, sizes, firsts };
  }
  // The outer contour of part `id` along pixel edges, the part on the right (clockwise on screen), turning
  // towards a diagonal neighbour (8-connected). Returns its corners [x, y] (integers, image pixels).
  const DX = [1, 0, -1, 0], DY = [0, 1, 0, -1];
  const AHEAD_LEFT = [[0, -1], [0, 0], [-1, 0], [-1, -1]], AHEAD_RIGHT = [[0, 0], [-1, 0], [-1, -1], [0, -1]];
  function contour(lab, id, start) {
    const W = S.W, H = S.H;
    const inPart = (x, y) => x >= 0 && y >= 0 && x < W && y < H && lab[y * W + x] === id;
    const sx = start % W, sy = (start - sx) / W, pts = [[sx, sy]];
    let x = sx, y = sy, d = 0;
    for (;;) {
      x += DX[d]; y += DY[d];
      if (x === sx && y === sy) return pts;
      const [lx, ly] = AHEAD_LEFT[d], [rx, ry] = AHEAD_RIGHT[d];
      const nd = inPart(x + lx, y + ly) ? (d + 3) % 4 : inPart(x + rx, y + ry) ? d : (d + 1) % 4;
      if (nd !== d) pts.push([x, y]);
      d = nd;
    }
  }
  function segDist([px, py], [ax, ay], [bx, by]) {
    const dx = bx - ax, dy = by - ay, ll = dx * dx + dy * dy;
    const t = ll ? Math.min(1, Math.max(0, ((px - ax) * dx + (py - ay) * dy) / ll)) : 0;
    return Math.hypot(ax + t * dx - px, ay + t * dy - py);
  }
  function rdp(p, eps) {  // Ramer-Douglas-Peucker on an open polyline (its ends kept)
    const keep = new Uint8Array(p.length), stack = [[0, p.length - 1]];
    keep[0] = keep[p.length - 1] = 1;
    while (stack.length) {
      const [a, b] = stack.pop(); let best = -1, far = eps;
      for (let i = a + 1; i < b; i++) { const d = segDist(p[i], p[a], p[b]); if (d > far) { far = d; best = i; } }
      if (best >= 0) { keep[best] = 1; stack.push([a, best], [best, b]); }
    }
    return p.filter((_, i) => keep[i]);
  }
  function simplifyClosed(pts, eps) {  // split at the corner farthest from the first, each half simplified
    if (pts.length <= 4) return pts.slice();
    let far = 0, fd = -1;
    pts.forEach(([x, y], i) => { const d = (x - pts[0][0]) ** 2 + (y - pts[0][1]) ** 2; if (d > fd) { fd = d; far = i; } });
    const a = rdp(pts.slice(0, far + 1), eps), b = rdp(pts.slice(far).concat([pts[0]]), eps);
    const out = a.concat(b.slice(1, -1));
    return out.length >= 3 ? out : pts.slice();
  }
  function outlineOf(m, seed) {  // the simplified outer contour of the part at pixel `seed` (else the largest)
    const { lab, sizes, firsts } = partsOf(m);
    if (sizes.length < 2) return null;
    let id = seed != null && m[seed] ? lab[seed] : 0;
    if (!id) for (let k = 1; k < sizes.length; k++) if (!id || sizes[k] > sizes[id]) id = k;
    const raw = contour(lab, id, firsts[id]);
    let eps = EPS, pts = simplifyClosed(raw, eps);
    while (pts.length > MAX_VERTICES) { eps *= 1.5; pts = simplifyClosed(raw, eps); }
    return { pts, parts: sizes.length - 1 };
  }

  // ---- the outline shown: the selected target's, traced again whenever its mask changed ---------------
  function trace(seed) {
    const t = S.targets[S.sel], got = outlineOf(t.mask, seed);
    stage.classList.remove('dc-dragging');
    S.outline = got && { t, mask: t.mask, ops: S.ops, sel: S.sel, seed, pts: got.pts, parts: got.parts, hover: -1, drag: null };
    return S.outline;
  }
  function current() {
    const t = S.targets[S.sel], o = S.outline;
    if (!t || !t.visible || S.noTarget) return null;
    if (o && o.t === t && o.mask === t.mask && o.ops === S.ops) return o;
    const fresh = !o || o.sel !== S.sel;
    const got = trace(o && o.sel === S.sel ? o.seed : null);
    if (got && fresh) S.api.say(hint(got));
    return got;
  }
  function hint(o) {
    const more = o.parts > 1 ? ` (${o.parts} parts: click another to outline it)` : '';
    return `outline of ${o.t.label}: ${o.pts.length} vertices${more}, drag one`;
  }
  function hit(o, p) {  // the vertex nearest the pointer within HIT screen pixels, or -1
    let best = -1, bd = HIT;
    o.pts.forEach(([x, y], i) => { const [sx, sy] = S.api.toScreen(x, y), d = Math.hypot(sx - p.sx, sy - p.sy); if (d <= bd) { bd = d; best = i; } });
    return best;
  }
  const corner = (p) => [Math.min(S.W, Math.max(0, Math.round(p.x))), Math.min(S.H, Math.max(0, Math.round(p.y)))];

  // ---- the mouse: a click picks the target and part, a drag moves a vertex ------------------------------
  function down(p, e) {
    if (e.button !== 0) return;
    const o = current(), i = o ? hit(o, p) : -1;
    if (i >= 0) {
      o.drag = { i, before: o.pts.map((q) => q.slice()) }; o.hover = i;
      stage.classList.add('dc-dragging'); S.api.draw(); return;
    }
    const inside = p.x >= 0 && p.y >= 0 && p.x < S.W && p.y < S.H, k = inside ? S.api.targetAt(p.x, p.y) : -1;
    if (k < 0) { S.api.say('Click a target (or another part of the selected one) to outline it, then drag a vertex.'); return; }
    S.sel = k;
    const got = trace(Math.floor(p.y) * S.W + Math.floor(p.x));
    S.api.rebuild(); S.api.renderList(); S.api.say(got ? hint(got) : ''); S.api.draw();
  }
  function move(p) {
    const o = S.outline;
    if (o && o.drag) { o.pts[o.drag.i] = corner(p); return; }
    const c = S.tool === 'outline' ? current() : null, i = c ? hit(c, p) : -1;
    if (c) c.hover = i;
    stage.classList.toggle('dc-vertex', i >= 0);
  }
  function up(p) {
    const o = S.outline;
    if (!o || !o.drag) return;
    const { i, before } = o.drag;
    o.drag = null; stage.classList.remove('dc-dragging');
    if (p) o.pts[i] = corner(p);
    const after = o.pts.map((q) => q.slice());
    if (after[i][0] === before[i][0] && after[i][1] === before[i][1]) { S.api.draw(); return; }
    commit(o, before, after, i);
  }
  // The rule: pixels whose side of the outline changed take the new side; every other pixel keeps its value.
  // (the same as (mask AND NOT old) OR (new AND (mask OR NOT old)): where old == new, the mask is kept)
  function commit(o, before, after, index) {
    const t = o.t, m = t.mask, old = S.api.polygonFill(before), neu = S.api.polygonFill(after), flip = [];
    for (let j = 0; j < m.length; j++) if (old[j] !== neu[j] && m[j] !== neu[j]) flip.push(j);
    S.lastOutline = { before, after, index };
    if (!flip.length) { S.api.say('vertex moved; no pixel changed'); S.api.draw(); return; }
    S.api.pushUndo();
    for (const j of flip) m[j] = neu[j];
    t.edited = true; t.rle = null; t.prompts = null;
    if (!m.some((v) => v)) { S.targets.splice(S.sel, 1); S.sel = -1; S.outline = null; }
    S.api.changed(`moved a vertex of ${t.label}: ${flip.length} px changed · Ctrl+Z takes it back`);
    if (S.outline) o.ops = S.ops;  // the outline stays as dragged (changed() counted the edit)
  }
  function key(e) {
    const o = S.outline;
    if (e.key !== 'Escape' || !o || !o.drag) return false;
    o.pts = o.drag.before; o.drag = null; stage.classList.remove('dc-dragging');
    S.api.say('drag dropped'); S.api.draw(); return true;
  }

  // ---- drawing: the outline, a small handle per vertex (close ones skipped), the hovered one large --------
  let hinted = false;  // what to do, said once each time the tool is switched on
  function paint(ctx) {
    if (S.tool !== 'outline' || S.readonly) { hinted = false; if (S.outline && S.outline.drag) key({ key: 'Escape' }); return; }
    const o = current();
    if (!hinted) { hinted = true; S.api.say(o ? hint(o) : 'Click a target to outline it, then drag a vertex.'); }
    if (!o) return;
    const scr = o.pts.map(([x, y]) => S.api.toScreen(x, y)), live = o.drag ? o.drag.i : o.hover;
    ctx.save();
    if (o.drag) path(ctx, o.drag.before.map(([x, y]) => S.api.toScreen(x, y)), [4, 4]);
    path(ctx, scr, []);
    let last = null;
    scr.forEach(([x, y], i) => {
      if (i === live || (last && Math.hypot(x - last[0], y - last[1]) < MIN_GAP)) return;
      ctx.fillStyle = '#fff'; ctx.strokeStyle = '#111'; ctx.lineWidth = 1;
      ctx.fillRect(x - HANDLE, y - HANDLE, 2 * HANDLE, 2 * HANDLE); ctx.strokeRect(x - HANDLE, y - HANDLE, 2 * HANDLE, 2 * HANDLE);
      last = [x, y];
    });
    if (live >= 0 && scr[live]) {
      const [x, y] = scr[live];
      ctx.beginPath(); ctx.arc(x, y, HOVER, 0, 2 * Math.PI); ctx.fillStyle = '#fde047'; ctx.fill();
      ctx.lineWidth = 2; ctx.strokeStyle = '#111'; ctx.stroke();
    }
    ctx.restore();
  }
  function path(ctx, scr, dash) {
    ctx.beginPath(); scr.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y))); ctx.closePath();
    ctx.setLineDash(dash); ctx.lineJoin = 'round';
    ctx.lineWidth = 3; ctx.strokeStyle = 'rgba(17,24,39,0.7)'; ctx.stroke();
    ctx.lineWidth = 1.5; ctx.strokeStyle = dash.length ? '#fff' : '#fde047'; ctx.stroke();
    ctx.setLineDash([]);
  }

  S.extraTools.push({ name: 'outline', down, move, up, key, paint });
  S.api.outlineOf = outlineOf;
})();
