// Prompt tools of the annotation canvas (issue 37): positive / negative clicks and a box, turned into a
// mask by the studio's refiner on the server (server.canvas_refine: GrabCut, or SAM with --refiner sam:...).
// Runs after canvas.js in the same js_on_load. An instance's prompts live on it (t.prompts, and t.prior:
// the mask it had before its first prompt, as RLE) and in the canvas's one undo history, so Ctrl+Z takes
// back the last prompt exactly (the mask is a function of the prompts; undo needs no server call).
(() => {
  const S = element.__canvas;
  if (!S || S.readonly || !server.canvas_refine) return;
  const stage = element.querySelector('.dc-stage');
  const toolsEl = element.querySelector('.dc-tools');
  S.refineLog = [];  // per answered prompt: {ms: click to mask painted, server_ms, n: prompts, refiner}
  S.refining = 0;
  let drag = null;  // the box being dragged: {x0, y0, x1, y1} in image pixels

  const inImage = (p) => p && p.x >= 0 && p.y >= 0 && p.x < S.W && p.y < S.H;
  const clampX = (x) => Math.min(S.W - 1, Math.max(0, x)), clampY = (y) => Math.min(S.H - 1, Math.max(0, y));
  const fmt = (v) => Math.round(v * 10) / 10;

  // The selected instance, or a new one. Its first prompt keeps the mask it has now as the prior
  // ("refine this candidate": a picked candidate starts from the candidate's mask).
  function instanceFor() {
    S.api.pushUndo();
    const snap = S.undo[S.undo.length - 1];
    let t = S.targets[S.sel];
    if (!t) {
      t = { mask: new Uint8Array(S.W * S.H), candidate: null, edited: true, visible: true, rle: null, prompts: [], prior: null };
      S.targets.push(t); S.sel = S.targets.length - 1; S.noTarget = false;
    }
    if (!t.prompts || !t.prompts.length) { t.prompts = []; t.prior = t.mask.some((v) => v) ? S.api.encodeRle(t.mask) : null; }
    return [t, snap];
  }

  async function prompt(p, what, t0) {
    const [t, snap] = instanceFor();
    t.prompts = t.prompts.concat([p]);  // replaced, never changed in place: undo snapshots share the arrays
    const sent = t.prompts;
    S.api.relabel(); S.api.rebuild(); S.api.renderList(); S.api.say(`${what}: refining…`); S.api.draw();
    S.refining++; stage.classList.add('refining');
    let r;
    try {
      r = await server.canvas_refine({ image: S.imgKey, w: S.W, h: S.H, prompts: sent, prior: t.prior });
    } catch (err) {
      r = { error: 'the server did not answer (' + (err && err.message || err) + '): try again' };
    } finally {
      S.refining--; if (!S.refining) stage.classList.remove('refining');
    }
    if (!S.targets.includes(t) || t.prompts !== sent) return;  // undone or followed by another prompt meanwhile
    if (!r || r.error) {
      if (S.undo[S.undo.length - 1] === snap) { S.api.undo(); S.redo.pop(); }  // the prompt leaves no trace
      else { t.prompts = sent.slice(0, -1); S.api.draw(); }
      S.api.say('Prompt not used: ' + ((r && r.error) || 'no answer'));
      return;
    }
    t.mask = S.api.decodeRle(r.rle); t.edited = true; group.textContent = `prompts (${r.refiner}):`;
    const area = t.mask.reduce((a, v) => a + v, 0);
    const n = t.prompts.length;
    S.api.changed(`${what} → ${area ? area + ' px' : 'nothing found: add a positive click or a box'} · ${n} prompt${n > 1 ? 's' : ''}, ${r.refiner} ${Math.round(r.ms)} ms · Ctrl+Z takes it back`);
    requestAnimationFrame(() => {  // after the frame that paints the new mask (canvas.js's draw runs first)
      S.refineLog.push({ ms: fmt(performance.now() - t0), server_ms: r.ms, n, refiner: r.refiner });
    });
  }

  function clickDown(p, e) {
    const t0 = performance.now();
    if (!inImage(p)) { S.api.say('Click inside the picture.'); return; }
    const negative = e.button === 2 || e.altKey;
    const t = S.targets[S.sel];
    if (negative && !t) { S.api.say('A negative click takes a part away from an instance: select one (Shift+click) or click on the object first.'); return; }
    prompt({ kind: 'point', x: fmt(p.x), y: fmt(p.y), label: negative ? 0 : 1 }, negative ? 'negative click' : 'positive click', t0);
  }
  function boxDown(p, e) {
    if (e.button !== 0) return;
    drag = { x0: clampX(p.x), y0: clampY(p.y), x1: clampX(p.x), y1: clampY(p.y) }; S.api.draw();
  }
  function boxMove(p) { if (drag) { drag.x1 = clampX(p.x); drag.y1 = clampY(p.y); } }
  function boxUp(p) {
    if (!drag) return;
    const t0 = performance.now(), d = drag; drag = null;
    if (p) { d.x1 = clampX(p.x); d.y1 = clampY(p.y); }
    const box = [Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.max(d.x0, d.x1), Math.max(d.y0, d.y1)].map(fmt);
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) { S.api.say('Drag a box around the object (press, move, release).'); S.api.draw(); return; }
    prompt({ kind: 'box', box }, 'box', t0);
  }
  function boxKey(e) {
    if (e.key === 'Escape' && drag) { drag = null; S.api.say('box dropped'); S.api.draw(); return true; }
    return false;
  }

  // "Refine this candidate" (F): the selected target, or the candidate / target under the pointer, becomes
  // the instance the next prompts refine (starting from its mask); the click tool is switched on.
  function refineThis() {
    const m = S.mouse;
    if (!S.targets[S.sel] && inImage(m)) {
      const k = S.api.targetAt(m.x, m.y);
      if (k >= 0) S.sel = k;
      else {
        const c = S.api.candidateAt(m.x, m.y);
        if (c >= 0) {
          S.api.pushUndo();
          const cand = S.cands[c];
          S.targets.push({ mask: S.api.decodeRle(cand.rle), candidate: cand.id, edited: false, visible: true, rle: null });
          S.sel = S.targets.length - 1; S.noTarget = false; S.api.changed(`added ${cand.label} to refine`);
        }
      }
    }
    const t = S.targets[S.sel];
    if (!t) { S.api.say('Point at a candidate (or select a target) and press F to refine it.'); return; }
    S.api.setTool('click');
    S.api.rebuild(); S.api.renderList();
    S.api.say(`refining ${t.label}: click what is missing, Alt+click or right-click what is too much, R for a box`);
  }

  // ---- what a prompt looks like: the selected instance's points and box, the box being dragged, and a
  // +/− badge at the pointer (the sign the next click will have) ----
  function paint(ctx) {
    const t = S.targets[S.sel];
    ctx.save();
    if (t && t.prompts && t.visible) {
      for (const q of t.prompts) {
        if (q.kind !== 'box') continue;
        const [ax, ay] = S.api.toScreen(q.box[0], q.box[1]), [bx, by] = S.api.toScreen(q.box[2], q.box[3]);
        ctx.setLineDash([6, 4]); ctx.lineWidth = 2; ctx.strokeStyle = '#000'; ctx.strokeRect(ax, ay, bx - ax, by - ay);
        ctx.setLineDash([6, 4]); ctx.lineDashOffset = 5; ctx.strokeStyle = '#fde047'; ctx.strokeRect(ax, ay, bx - ax, by - ay);
        ctx.lineDashOffset = 0; ctx.setLineDash([]);
      }
      t.prompts.forEach((q, i) => { if (q.kind === 'point') marker(ctx, ...S.api.toScreen(q.x, q.y), q.label === 1, i === t.prompts.length - 1); });
    }
    if (drag) {
      const [ax, ay] = S.api.toScreen(drag.x0, drag.y0), [bx, by] = S.api.toScreen(drag.x1, drag.y1);
      ctx.setLineDash([6, 4]); ctx.lineWidth = 2; ctx.strokeStyle = '#fff'; ctx.strokeRect(ax, ay, bx - ax, by - ay); ctx.setLineDash([]);
    }
    if (S.mouse && S.tool === 'click' && !S.space && inImage(S.mouse)) {
      const neg = !!S.alt;
      badge(ctx, S.mouse.sx + 12, S.mouse.sy + 14, neg);
    }
    if (S.mouse && S.tool === 'box' && !drag && !S.space && inImage(S.mouse)) {
      ctx.fillStyle = '#fde047'; ctx.strokeStyle = '#000'; ctx.lineWidth = 1;
      ctx.strokeRect(S.mouse.sx + 8, S.mouse.sy + 8, 14, 10); ctx.strokeStyle = '#fde047'; ctx.strokeRect(S.mouse.sx + 9, S.mouse.sy + 9, 12, 8);
    }
    ctx.restore();
  }
  function marker(ctx, sx, sy, positive, last) {
    ctx.beginPath(); ctx.arc(sx, sy, last ? 8 : 7, 0, 2 * Math.PI);
    ctx.fillStyle = positive ? '#16a34a' : '#dc2626'; ctx.fill();
    ctx.lineWidth = last ? 3 : 2; ctx.strokeStyle = '#fff'; ctx.stroke();
    ctx.lineWidth = 2.5; ctx.beginPath(); ctx.moveTo(sx - 4, sy); ctx.lineTo(sx + 4, sy);
    if (positive) { ctx.moveTo(sx, sy - 4); ctx.lineTo(sx, sy + 4); }
    ctx.stroke();
  }
  // The pointer's hint: a tag, not a disc, so it is never mistaken for a placed point.
  function badge(ctx, sx, sy, negative) {
    const text = negative ? '− remove' : '+ add';
    ctx.font = 'bold 11px sans-serif'; ctx.textBaseline = 'middle';
    const w = ctx.measureText(text).width + 8;
    ctx.fillStyle = 'rgba(17,24,39,0.85)'; ctx.beginPath(); ctx.roundRect(sx, sy - 8, w, 16, 4); ctx.fill();
    ctx.strokeStyle = negative ? '#f87171' : '#4ade80'; ctx.lineWidth = 1.5; ctx.stroke();
    ctx.fillStyle = negative ? '#fca5a5' : '#86efac'; ctx.fillText(text, sx + 4, sy + 1);
  }

  S.addTool(['c', 'click', 'Click prompts: click the object to grow the selected instance (or make a new one); Alt+click or right-click takes a part away (C)'],
    { down: clickDown, paint });
  S.addTool(['r', 'box', 'Box prompt: drag a box around the object; it refines the selected instance or makes a new one (R; Esc drops the box)'],
    { down: boxDown, move: boxMove, up: boxUp, key: boxKey });
  const group = document.createElement('span'); group.className = 'dc-group';
  group.textContent = 'prompts:'; group.title = 'Clicks and a box turned into a mask by the studio\'s refiner; each refines the selected instance or makes a new one';
  toolsEl.insertBefore(group, toolsEl.querySelector('.dc-tool[data-tool=click]'));
  const fb = document.createElement('button'); fb.className = 'dc-btn dc-refine';
  fb.innerHTML = 'refine <kbd>F</kbd>'; fb.title = 'Refine this candidate: the selected target, or the candidate under the pointer, is refined by the next clicks (F)';
  fb.addEventListener('click', refineThis);
  toolsEl.insertBefore(fb, toolsEl.querySelector('.dc-tool[data-tool=box]').nextSibling);
  S.api.refineThis = refineThis;
  document.addEventListener('keydown', (e) => {
    if (element.offsetParent === null || !S.img) return;
    if (e.key === 'Alt' && S.tool === 'click') { S.alt = true; S.api.draw(); return; }
    const typing = !!document.activeElement?.matches?.('input, textarea, select, [contenteditable]:not([contenteditable="false"])');
    if (typing || e.ctrlKey || e.metaKey || e.altKey || e.key.toLowerCase() !== 'f') return;
    e.preventDefault(); e.stopImmediatePropagation(); refineThis();
  }, true);
  document.addEventListener('keyup', (e) => { if (e.key === 'Alt' && S.alt) { S.alt = false; S.api.draw(); } });
  const help = element.querySelector('.dc-help');
  help.title += ' · C click prompts (Alt+click or right-click: negative) · R box prompt · F refine this candidate';
})();
