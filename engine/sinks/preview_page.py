"""The preview's page: the live picture, the stream's numbers, and click-to-track over the prompt API
(``engine.sinks.prompt_api``).

On the picture: a click tracks a new object from that point, or, with a track selected, adds a
foreground point to it; a shift-click adds a background point to the selected track; a drag gives a box
(a new object, or the selected one's). The list beside the picture shows the live tracks (id, label,
origin, whether visible); clicking one selects it, and the picture outlines it. Delete (or Backspace,
or the button) removes the selected track; Escape (or "new object") clears the selection. Clicks are
sent in frame pixels, whatever size the picture is shown at, with the index of the picture clicked on.

A preview that needs a token asks for it once (or takes it from the address: ``#token=...``) and keeps
it for the tab's session.
"""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>streamseg preview</title>
<style>
body{margin:0;background:#111;color:#ddd;font:14px monospace;display:flex;flex-wrap:wrap;align-items:flex-start}
#view{position:relative;line-height:0;cursor:crosshair;user-select:none;max-width:100%}
#stream{display:block;max-width:100%}
#marks{position:absolute;left:0;top:0;pointer-events:none}
#side{padding:6px 10px;max-width:32em}
#side>div{margin-bottom:6px}
#tracks{padding:0;margin:0}
#tracks li{list-style:none;padding:2px 4px;cursor:pointer}
#tracks li.selected{background:#345;color:#fff}
#tracks li.hidden{color:#888}
button{font:inherit}
</style></head>
<body>
<div id="view"><img id="stream" src="/stream.mjpg" alt="streamseg live preview" draggable="false"><canvas id="marks"></canvas></div>
<div id="side">
<div id="stats">waiting for frames</div>
<div id="help">click: track a new object, or add to the selected track &middot; shift-click: background
point for the selected track &middot; drag: box &middot; Delete: remove the selected track &middot; Esc: new object</div>
<div><button id="remove" disabled>remove selected</button> <button id="deselect">new object</button></div>
<div id="message"></div>
<ul id="tracks"></ul>
</div>
<script>
const img = document.getElementById('stream'), canvas = document.getElementById('marks');
let selected = null, tracks = [], shownFrame = null, drag = null;
let bearer = sessionStorage.getItem('streamseg-token');
const fromHash = location.hash.match(/token=([^&]+)/);
if (fromHash) {
  bearer = decodeURIComponent(fromHash[1]);
  sessionStorage.setItem('streamseg-token', bearer);
  history.replaceState(null, '', location.pathname);
}

function say(text) { document.getElementById('message').textContent = text; }

async function api(method, path, body) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (bearer) headers['Authorization'] = 'Bearer ' + bearer;
    const r = await fetch(path, {method, headers, cache: 'no-store',
                                 body: body === undefined ? undefined : JSON.stringify(body)});
    const data = await r.json().catch(() => ({}));
    if (r.status === 401 && attempt === 0) {
      bearer = window.prompt('This preview needs its token:') || '';
      sessionStorage.setItem('streamseg-token', bearer);
      continue;
    }
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }
}

function framePoint(ev) {
  const r = img.getBoundingClientRect();
  const x = (ev.clientX - r.left) * img.naturalWidth / r.width;
  const y = (ev.clientY - r.top) * img.naturalHeight / r.height;
  return [Math.min(Math.max(x, 0), img.naturalWidth), Math.min(Math.max(y, 0), img.naturalHeight)];
}

function select(id) {
  selected = id;
  document.getElementById('remove').disabled = selected === null;
  showTracks();
  draw();
}

async function prompt(body) {
  if (selected !== null) body.id = selected;
  if (shownFrame !== null) body.frame = shownFrame;
  try {
    const answer = await api('POST', '/prompts', body);
    say(`track ${answer.id}: prompt applied`);
    select(answer.id);
  } catch (e) {
    say('refused: ' + e.message);
  }
  refresh();
}

async function removeSelected() {
  if (selected === null) return;
  const id = selected;
  try {
    await api('DELETE', '/tracks/' + id);
    say(`track ${id} removed`);
    select(null);
  } catch (e) {
    say('refused: ' + e.message);
  }
  refresh();
}

img.addEventListener('mousedown', ev => {
  if (ev.button !== 0 || !img.naturalWidth) return;
  drag = {start: framePoint(ev), x: ev.clientX, y: ev.clientY, shift: ev.shiftKey, end: null};
  ev.preventDefault();
});
window.addEventListener('mousemove', ev => { if (drag) { drag.end = framePoint(ev); draw(); } });
window.addEventListener('mouseup', ev => {
  if (!drag) return;
  const d = drag;
  drag = null;
  draw();
  if (Math.hypot(ev.clientX - d.x, ev.clientY - d.y) > 5) {
    const [a, b] = [d.start, framePoint(ev)];
    prompt({box: [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])]});
  } else if (d.shift && selected === null) {
    say('select a track first: a shift-click marks background for the selected track');
  } else {
    prompt({points: [d.start], labels: [d.shift ? 0 : 1]});
  }
});
document.addEventListener('keydown', ev => {
  if (ev.key === 'Delete' || ev.key === 'Backspace') { ev.preventDefault(); removeSelected(); }
  else if (ev.key === 'Escape') select(null);
});
document.getElementById('remove').addEventListener('click', removeSelected);
document.getElementById('deselect').addEventListener('click', () => select(null));

function showTracks() {
  const list = document.getElementById('tracks');
  list.replaceChildren(...tracks.map(t => {
    const item = document.createElement('li');
    item.dataset.id = t.id;
    item.textContent = `#${t.id} ${t.label || 'object'} (${t.origin})${t.visible ? '' : ' hidden'}`;
    item.className = (t.id === selected ? 'selected ' : '') + (t.visible ? '' : 'hidden');
    item.addEventListener('click', () => select(t.id === selected ? null : t.id));
    return item;
  }));
}

function draw() {
  const r = img.getBoundingClientRect();
  canvas.width = r.width;
  canvas.height = r.height;
  const g = canvas.getContext('2d');
  if (!img.naturalWidth) return;
  const sx = r.width / img.naturalWidth, sy = r.height / img.naturalHeight;
  const track = tracks.find(t => t.id === selected);
  g.lineWidth = 3;
  if (track && track.box) {
    const [x1, y1, x2, y2] = track.box;
    g.strokeStyle = '#ff0';
    g.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
    g.fillStyle = '#ff0';
    g.font = '14px monospace';
    g.fillText(`selected #${track.id}`, x1 * sx + 4, Math.max(14, y1 * sy - 4));
  }
  if (drag && drag.end) {
    const [a, b] = [drag.start, drag.end];
    g.strokeStyle = '#0ff';
    g.strokeRect(a[0] * sx, a[1] * sy, (b[0] - a[0]) * sx, (b[1] - a[1]) * sy);
  }
}

async function refresh() {
  try {
    const t = await (await fetch('/tracks', {cache: 'no-store'})).json();
    tracks = t.tracks;
    if (selected !== null && !tracks.some(x => x.id === selected)) select(null);
    showTracks();
    draw();
  } catch (e) {}
}

async function poll() {
  try {
    const s = await (await fetch('/stats.json', {cache: 'no-store'})).json();
    shownFrame = s.picture_frame;
    document.getElementById('stats').textContent =
      `frame ${s.frame}  instances ${s.instances}  total ${s.total_ms} ms  age ${s.age_ms} ms`;
  } catch (e) {}
  await refresh();
  setTimeout(poll, 500);
}
poll();
</script></body></html>
"""
