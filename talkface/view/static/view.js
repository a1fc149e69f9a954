// talkface view: draws a FLAME-style vertex animation with three.js, driven by the audio clock (offline),
// or frames streamed back from talkface's streamer while the microphone is sent (live).
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';

// The renderer's (VOCA/FaceFormer) camera: focal 2377.49 px at 800 px, 1 m away on +z, looking down -z.
const FOCAL_800 = 4754.97941935 / 2;
const FOV_DEG = 2 * Math.atan(400 / FOCAL_800) * 180 / Math.PI;
const SAMPLE_RATE = 16000;
const $ = (id) => document.getElementById(id);

// What the tests (and a curious user, in the console) can read.
const state = {
  mode: null, ready: false, error: null, frame: -1, time: 0, fps: 0, numFrames: 0, lipErrorMm: null,
  drawn: 0, late: 0, playing: false, framesReceived: 0, lastIndex: -1, latencyMs: null, done: null,
  reconnects: 0, socket: 'closed', samplesSent: 0,
};
window.talkface = { state };

function showError(message) {
  state.error = message;
  $('error').textContent = message;
  $('error').hidden = !message;
}

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json().catch(() => ({ error: `${url}: HTTP ${response.status}` }));
  if (!response.ok || body.error) throw new Error(body.error || `${url}: HTTP ${response.status}`);
  return body;
}

async function getArray(url, Type) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Type(await response.arrayBuffer());
}

// ------------------------------------------------------------------------------------------ scene
const canvas = $('canvas');
const renderer = new THREE.WebGLRenderer({ canvas, antialias: false });
renderer.setPixelRatio(1);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x000000);
const camera = new THREE.PerspectiveCamera(FOV_DEG, 1, 0.01, 3.0);
camera.position.set(0, 0, 1);
const controls = new OrbitControls(camera, canvas);
controls.target.set(0, 0, 0);
controls.update();
// One directional light along -z (FaceFormer's, intensity 8 as the renderer uses) and an ambient term that
// adds base x 0.2 as pyrender's does (three's ambient goes through the Lambert 1/pi and the non-metal part).
const light = new THREE.DirectionalLight(0xffffff, 8.0);
light.position.set(0, 0, 1);
camera.add(light);
light.target.position.set(0, 0, -1);
camera.add(light.target);
scene.add(camera);
scene.add(new THREE.AmbientLight(0xffffff, 0.2 * Math.PI / (1 - 0.8)));

// Shading. 'fast' (default, as `talkface render`'s): the renderer's BRDF, light and material evaluated per
// vertex here (talkface/render/gl.py's shader, term by term) and drawn unlit with MeshBasicMaterial, so the
// GPU (often SwiftShader, i.e. the CPU) only interpolates colours. 'pbr': three's MeshStandardMaterial per pixel.
const BASE = 0.3, METALLIC = 0.8, ROUGHNESS = 0.8, AMBIENT = 0.2, INTENSITY = 8.0;
let shading = 'fast';

function faceMaterial(vertexColors = false) {
  if (shading === 'fast') return new THREE.MeshBasicMaterial({ vertexColors: true, side: THREE.FrontSide });
  const color = new THREE.Color().setRGB(BASE, BASE, BASE, THREE.LinearSRGBColorSpace);
  return new THREE.MeshStandardMaterial({ color, metalness: METALLIC, roughness: ROUGHNESS, vertexColors,
                                          side: THREE.FrontSide });
}

const _l = new THREE.Vector3();
function shadeVertices(mesh, tint) {
  // pyrender's metallic-roughness BRDF for one directional light along the camera's -z, plus ambient;
  // gamma 1/2.2 per vertex (the output colour space is linear in this mode)
  const position = mesh.geometry.attributes.position.array, normal = mesh.geometry.attributes.normal.array;
  const colors = mesh.geometry.attributes.color;
  const out = colors.array;
  const cx = camera.position.x, cy = camera.position.y, cz = camera.position.z;
  _l.set(0, 0, 1).applyQuaternion(camera.quaternion);
  const lx = _l.x, ly = _l.y, lz = _l.z;
  const cDiff = BASE * (1 - 0.04) * (1 - METALLIC), f0 = 0.04 * (1 - METALLIC) + BASE * METALLIC;
  const r = ROUGHNESS + 1, k = r * r / 8, a2 = ROUGHNESS ** 4, ambient = BASE * AMBIENT;
  for (let i = 0; i < out.length; i += 3) {
    let vx = cx - position[i], vy = cy - position[i + 1], vz = cz - position[i + 2];
    const vn = Math.hypot(vx, vy, vz) || 1;
    vx /= vn; vy /= vn; vz /= vn;
    const nx = normal[i], ny = normal[i + 1], nz = normal[i + 2];
    let hx = lx + vx, hy = ly + vy, hz = lz + vz;
    const hn = Math.hypot(hx, hy, hz) || 1;
    hx /= hn; hy /= hn; hz /= hn;
    const nl = Math.min(1, Math.max(0.001, nx * lx + ny * ly + nz * lz));
    const nv = Math.min(1, Math.max(0.001, Math.abs(nx * vx + ny * vy + nz * vz)));
    const nh = Math.min(1, Math.max(0, nx * hx + ny * hy + nz * hz));
    const vh = Math.min(1, Math.max(0, vx * hx + vy * hy + vz * hz));
    const F = f0 + (1 - f0) * (1 - vh) ** 5;
    const G = nv / (nv * (1 - k) + k) * nl / (nl * (1 - k) + k);
    const d = nh * nh * (a2 - 1) + 1;
    const D = a2 / (Math.PI * d * d);
    const c = ambient + nl * INTENSITY * ((1 - F) * cDiff / Math.PI + F * G * D / (4 * nl * nv + 0.001));
    for (let j = 0; j < 3; j++) {
      const tinted = tint ? c * tint[i + j] : c;
      out[i + j] = Math.min(1, Math.max(0, tinted)) ** (1 / 2.2);
    }
  }
  colors.needsUpdate = true;
}

function makeMesh(positions, faces) {
  const geometry = new THREE.BufferGeometry();
  const position = new THREE.BufferAttribute(new Float32Array(positions), 3);
  position.setUsage(THREE.DynamicDrawUsage);
  geometry.setAttribute('position', position);
  geometry.setIndex(new THREE.BufferAttribute(faces, 1));
  geometry.setAttribute('color', new THREE.BufferAttribute(new Float32Array(positions.length).fill(1), 3));
  geometry.computeVertexNormals();
  const mesh = new THREE.Mesh(geometry, faceMaterial());
  mesh.frustumCulled = false;
  return mesh;
}

function setPositions(mesh, source, offset) {
  const position = mesh.geometry.attributes.position;
  position.array.set(source.subarray(offset, offset + position.array.length));
  position.needsUpdate = true;
  mesh.geometry.computeVertexNormals();
}

let panes = [];  // [{mesh or object, label}] drawn side by side
function resize() {
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== width || canvas.height !== height) renderer.setSize(width, height, false);
}

function render() {
  resize();
  const width = canvas.width, height = canvas.height;
  const shown = panes.filter((p) => p.visible !== false);
  const n = Math.max(1, shown.length);
  renderer.setScissorTest(n > 1);
  for (const pane of panes) pane.object.visible = false;
  shown.forEach((pane, i) => {
    const x = Math.round(i * width / n), w = Math.round((i + 1) * width / n) - x;
    renderer.setViewport(x, 0, w, height);
    renderer.setScissor(x, 0, w, height);
    camera.aspect = w / height;
    camera.updateProjectionMatrix();
    pane.object.visible = true;
    if (shading === 'fast' && pane.object.isMesh) shadeVertices(pane.object, pane.tint ? pane.tint() : null);
    renderer.render(scene, camera);
    pane.object.visible = false;
  });
  if (!shown.length) renderer.render(scene, camera);
  $('labels').innerHTML = shown.length > 1 ? shown.map((p) => `<span>${p.label}</span>`).join('') : '';
}

function clearScene() {
  for (const pane of panes) {
    scene.remove(pane.object);
    pane.object.traverse?.((o) => { o.geometry?.dispose(); });
  }
  panes = [];
}

function applyMaterials() {
  renderer.outputColorSpace = shading === 'fast' ? THREE.LinearSRGBColorSpace : THREE.SRGBColorSpace;
  for (const pane of panes) {
    pane.object.traverse((o) => {
      if (!o.isMesh) return;
      o.material = faceMaterial(Boolean(pane.tint));
      o.material.wireframe = $('wireframe').checked;
      if (shading === 'pbr' && o.geometry.attributes.color) {  // per-pixel: the colour attribute carries only the error tint
        o.geometry.attributes.color.array.fill(1);
        o.geometry.attributes.color.needsUpdate = true;
      }
    });
  }
  $('shading').value = shading;
  state.frame = -1;
}
$('wireframe').addEventListener('change', applyMaterials);
$('shading').addEventListener('change', () => {
  shading = item && item.mixer ? 'pbr' : $('shading').value;  // a GLB moves on the GPU (morph targets)
  applyMaterials();
});

// ------------------------------------------------------------------------------------------ offline
const audio = $('audio');
const clock = { playing: false, t: 0, last: 0 };  // used when an item has no audio
let item = null;  // {meta, vertices, gt, faces, pred, truth, numVertices, colors, lut} or {meta, mixer, clip}

function hasAudio() { return item && item.meta.audio && audio.src; }
function duration() { return item ? item.numFrames / item.fps : 0; }

function currentTime() {
  if (hasAudio()) return audio.currentTime;
  if (clock.playing) {
    const now = performance.now();
    clock.t += (now - clock.last) / 1000 * Number($('speed').value);
    clock.last = now;
    if (clock.t >= duration()) {
      if ($('loop').checked) clock.t %= duration(); else { clock.t = duration(); clock.playing = false; }
    }
  }
  return clock.t;
}

function isPlaying() { return hasAudio() ? !audio.paused && !audio.ended : clock.playing; }

function setPlaying(play) {
  if (hasAudio()) {
    if (play) audio.play().catch((e) => showError(`the browser would not play the audio: ${e.message}`));
    else audio.pause();
  } else {
    clock.playing = play;
    clock.last = performance.now();
    if (play && clock.t >= duration()) clock.t = 0;
  }
}

function seek(t) {
  state.seeked = true;
  if (hasAudio()) audio.currentTime = t; else clock.t = t;
}

$('play').addEventListener('click', () => setPlaying(!isPlaying()));
$('speed').addEventListener('change', () => { audio.playbackRate = Number($('speed').value); });
$('loop').addEventListener('change', () => { audio.loop = $('loop').checked; });
$('scrub').addEventListener('input', () => seek(Number($('scrub').value) * duration()));
$('compare').addEventListener('change', () => { if (item) { configureCompare(); state.frame = -1; } });
$('pick').addEventListener('change', () => openItem($('pick').value));

function lutLinear(colormap) {
  const c = new THREE.Color();
  return colormap.map(([r, g, b]) => { c.setRGB(r, g, b, THREE.SRGBColorSpace); return [c.r, c.g, c.b]; });
}

function drawColorbar(meta) {
  const bar = $('colorbar');
  const ctx = bar.getContext('2d');
  ctx.clearRect(0, 0, bar.width, bar.height);
  const top = 10, bottom = bar.height - 10, n = meta.colormap.length;
  for (let i = 0; i < n; i++) {
    const [r, g, b] = meta.colormap[n - 1 - i];
    ctx.fillStyle = `rgb(${r * 255},${g * 255},${b * 255})`;
    ctx.fillRect(0, top + i * (bottom - top) / n, 14, (bottom - top) / n + 1);
  }
  ctx.fillStyle = '#ddd';
  ctx.font = '11px sans-serif';
  ctx.fillText(`${meta.error_range_mm[1]}`, 16, top + 8);
  ctx.fillText(`${meta.error_range_mm[0]}`, 16, bottom);
  ctx.fillText('mm', 16, (top + bottom) / 2);
}

function configureCompare() {
  const mode = item.gt ? $('compare').value : 'off';
  item.predPane.tint = mode === 'error' ? () => item.tint : null;
  if (item.truth) item.truthPane.visible = mode === 'beside';
  $('colorbar').hidden = mode !== 'error';
  if (mode === 'error') drawColorbar(item.meta);
  applyMaterials();
}

function colourErrors(frame) {
  const { vertices, gt, numVertices, lut, meta } = item;
  const colors = { array: item.tint };
  const gtFrame = Math.min(frame, item.gtFrames - 1);
  const [low, high] = meta.error_range_mm, n = lut.length;
  const p = frame * numVertices * 3, g = gtFrame * numVertices * 3;
  for (let v = 0; v < numVertices; v++) {
    const dx = vertices[p + 3 * v] - gt[g + 3 * v], dy = vertices[p + 3 * v + 1] - gt[g + 3 * v + 1];
    const dz = vertices[p + 3 * v + 2] - gt[g + 3 * v + 2];
    const mm = Math.sqrt(dx * dx + dy * dy + dz * dz) * 1000;
    const k = Math.min(n - 1, Math.max(0, Math.round((mm - low) / (high - low) * (n - 1))));
    colors.array[3 * v] = lut[k][0]; colors.array[3 * v + 1] = lut[k][1]; colors.array[3 * v + 2] = lut[k][2];
  }
  if (shading === 'pbr') {
    item.pred.geometry.attributes.color.array.set(item.tint);
    item.pred.geometry.attributes.color.needsUpdate = true;
  }
}

async function openItem(id) {
  showError('');
  state.ready = false;
  setPlaying(false);
  clearScene();
  item = null;
  audio.removeAttribute('src');
  audio.load();
  try {
    const meta = await getJSON(`/api/item/${id}`);
    if (meta.error) throw new Error(meta.error);
    item = meta.kind === 'gltf' ? await loadGltf(meta) : await loadMesh(meta);
    if (meta.audio) {
      audio.src = `/api/item/${id}/audio`;
      audio.playbackRate = Number($('speed').value);
      audio.loop = $('loop').checked;
      const playable = await new Promise((resolve) => {
        audio.addEventListener('loadedmetadata', () => resolve(true), { once: true });
        audio.addEventListener('error', () => resolve(false), { once: true });
      });
      if (!playable) {  // e.g. a codec this browser lacks: play silently by the page's own clock
        audio.removeAttribute('src');
        audio.load();
        showError(`the browser cannot play this item's audio; playing without sound (convert it to .wav)`);
      }
    }
    clock.t = 0;
    state.fps = item.fps;
    state.numFrames = item.numFrames;
    state.frame = -1;
    state.ready = true;
  } catch (e) {
    item = null;
    showError(e.message);
  }
}

async function loadMesh(meta) {
  const id = meta.id;
  const [vertices, faces, gt] = await Promise.all([
    getArray(`/api/item/${id}/vertices`, Float32Array), getArray(`/api/item/${id}/faces`, Uint32Array),
    meta.gt_frames ? getArray(`/api/item/${id}/gt`, Float32Array) : Promise.resolve(null)]);
  const numVertices = meta.num_vertices;
  const pred = makeMesh(vertices.subarray(0, numVertices * 3), faces);
  scene.add(pred);
  const predPane = { object: pred, label: 'prediction', tint: null };
  panes.push(predPane);
  const loaded = { meta, vertices, gt, faces, pred, predPane, numVertices, fps: meta.fps, numFrames: meta.num_frames,
                   gtFrames: meta.gt_frames || 0, lut: lutLinear(meta.colormap),
                   tint: new Float32Array(numVertices * 3).fill(1) };
  if (gt) {
    loaded.truth = makeMesh(gt.subarray(0, numVertices * 3), faces);
    scene.add(loaded.truth);
    loaded.truthPane = { object: loaded.truth, label: 'ground truth' };
    panes.push(loaded.truthPane);
  }
  $('compare-row').hidden = !gt;
  item = loaded;
  configureCompare();
  return loaded;
}

async function loadGltf(meta) {
  const gltf = await new GLTFLoader().loadAsync(`/api/item/${meta.id}/model`);
  const root = gltf.scene;
  root.traverse((o) => { if (o.isMesh) o.frustumCulled = false; });
  scene.add(root);
  panes.push({ object: root, label: meta.name });
  shading = 'pbr';  // its vertices move on the GPU (morph targets): no per-vertex shading here
  applyMaterials();
  const clip = gltf.animations[0];
  let fps = 30, numFrames = 1;
  if (clip && clip.tracks.length && clip.tracks[0].times.length > 1) {
    const times = clip.tracks[0].times;  // T + 1 keys at k / fps (talkface's GLB writer)
    numFrames = times.length - 1;
    // key times are float32: 1/30 s comes back as 29.99999 fps, and floor(1.0 s x that) would be frame 29
    fps = Math.round(numFrames / (times[numFrames] - times[0]) * 1000) / 1000;
  }
  const mixer = new THREE.AnimationMixer(root);
  if (clip) mixer.clipAction(clip).play();
  $('compare-row').hidden = true;
  $('colorbar').hidden = true;
  return { meta, mixer, fps, numFrames };
}

function showFrame(frame) {
  if (item.mixer) {
    item.mixer.setTime(frame / item.fps);
  } else {
    setPositions(item.pred, item.vertices, frame * item.numVertices * 3);
    if (item.truth) setPositions(item.truth, item.gt, Math.min(frame, item.gtFrames - 1) * item.numVertices * 3);
    if (item.predPane.tint) colourErrors(frame);
  }
  const errors = item.meta.lip_errors_mm;
  state.lipErrorMm = errors && frame < errors.length ? errors[frame] : null;
  $('lip').textContent = state.lipErrorMm !== null ? `${state.lipErrorMm.toFixed(2)} mm`
    : (item.meta.gt_frames ? (item.meta.note || '–') : 'needs --compare');
}

function tickOffline() {
  if (!item || !state.ready) return;
  const t = currentTime();
  const frame = Math.max(0, Math.min(item.numFrames - 1, Math.floor(t * item.fps)));
  const playing = isPlaying();
  if (frame !== state.frame) {
    if (playing && !state.seeked && state.frame >= 0 && frame > state.frame + 1) state.late += frame - state.frame - 1;
    showFrame(frame);
    state.frame = frame;
    state.drawn += 1;
  }
  state.seeked = false;
  state.time = t;
  state.tickAt = performance.now();
  state.playing = playing;
  $('frame').textContent = `${frame + 1} / ${item.numFrames}`;
  $('time').textContent = `${t.toFixed(3)} s`;
  $('play').textContent = playing ? 'Pause' : 'Play';
  if (document.activeElement !== $('scrub')) $('scrub').value = duration() ? t / duration() : 0;
}

async function startOffline() {
  $('offline').hidden = false;
  const list = await getJSON('/api/items');
  if (list.items.length > 1) {
    $('pick-row').hidden = false;
    for (const it of list.items) {
      const option = document.createElement('option');
      option.value = it.id;
      option.textContent = it.name;
      $('pick').appendChild(option);
    }
  }
  if (list.items.length) await openItem(list.items[0].id);
}

// ------------------------------------------------------------------------------------------ live
const live = { socket: null, meta: null, mesh: null, streaming: false, pending: null, captures: [], latencies: [],
               source: null, ctx: null, maxSamples: Infinity, resample: null, fileTimer: null, wanted: false,
               backoff: 250 };

function liveUrl() { return `ws://${location.host}/ws/live`; }

function connect() {
  const socket = new WebSocket(liveUrl());
  socket.binaryType = 'arraybuffer';
  live.socket = socket;
  state.socket = 'connecting';
  $('socket').textContent = state.socket;
  socket.onopen = () => {
    state.socket = 'open';
    live.backoff = 250;
    $('socket').textContent = 'open';
    if (live.wanted) startUtterance();
  };
  socket.onmessage = (event) => (typeof event.data === 'string' ? onLiveText(JSON.parse(event.data))
    : onLiveFrames(event.data));
  socket.onclose = () => {
    state.socket = 'closed';
    live.streaming = false;
    $('socket').textContent = 'closed, reconnecting…';
    state.reconnects += 1;
    setTimeout(connect, live.backoff);
    live.backoff = Math.min(5000, live.backoff * 2);
  };
}

function startUtterance() {
  live.streaming = false;
  live.captures = [];
  state.samplesSent = 0;
  if (live.socket && live.socket.readyState === WebSocket.OPEN) {
    live.socket.send(JSON.stringify({ type: 'start', style: $('style').value,
                                      lookahead_ms: Number($('lookahead').value), format: 'f32le' }));
  }
}

function endUtterance() {
  if (live.streaming && live.socket.readyState === WebSocket.OPEN) live.socket.send(JSON.stringify({ type: 'end' }));
  live.streaming = false;
}

function onLiveText(message) {
  if (message.type === 'ready') {
    live.meta = message;
    live.streaming = true;
    state.style = message.style;
    state.lookaheadMs = message.lookahead_ms;
    state.fps = message.fps;
    state.done = null;
    state.framesReceived = 0;
    state.lastIndex = -1;
    $('lookahead-shown').textContent = `${message.lookahead_ms} ms (hop ${Math.round(message.hop_ms)} ms)`;
    showError('');
  } else if (message.type === 'done') {
    state.done = message;
  } else if (message.type === 'error') {
    showError(message.message);
  }
}

function captureTimeOf(sample) {
  // captures: [endSample, time at which that sample was captured (ms)] in order
  for (const [end, time] of live.captures) {
    if (sample <= end) return time - (end - sample) / SAMPLE_RATE * 1000;
  }
  return null;
}

function onLiveFrames(buffer) {
  const V = live.meta.num_vertices, record = 4 + 12 * V;
  const view = new DataView(buffer);
  for (let offset = 0; offset + record <= buffer.byteLength; offset += record) {
    const index = view.getUint32(offset, true);
    live.pending = { index, vertices: new Float32Array(buffer, offset + 4, 3 * V) };
    state.framesReceived += 1;
    state.lastIndex = index;
  }
  $('received').textContent = `${state.framesReceived}`;
}

function tickLive() {
  if (!live.pending || !live.mesh) return;
  const { index, vertices } = live.pending;
  live.pending = null;
  setPositions(live.mesh, vertices, 0);
  state.frame = index;
  state.drawn += 1;
  const captured = captureTimeOf(Math.floor(index / live.meta.fps * SAMPLE_RATE));
  if (captured !== null) {
    live.latencies.push(performance.now() - captured);
    if (live.latencies.length > 30) live.latencies.shift();
    const sorted = [...live.latencies].sort((a, b) => a - b);
    state.latencyMs = sorted[Math.floor(sorted.length / 2)];
    $('latency').textContent = `${Math.round(state.latencyMs)} ms (median of ${sorted.length})`;
  }
}

function sendSamples(samples, capturedAt) {
  if (!live.streaming || live.socket.readyState !== WebSocket.OPEN) return;
  const room = live.maxSamples - state.samplesSent;
  if (room <= 0) return;
  const piece = samples.length > room ? samples.subarray(0, room) : samples;
  live.socket.send(piece.slice().buffer);
  state.samplesSent += piece.length;
  live.captures.push([state.samplesSent - 1, capturedAt]);
  if (live.captures.length > 2000) live.captures.shift();
  if (state.samplesSent >= live.maxSamples) endUtterance();
}

function makeResampler(rate) {
  // linear interpolation from `rate` to 16 kHz, carrying the phase across blocks
  if (rate === SAMPLE_RATE) return (x) => x;
  const step = rate / SAMPLE_RATE;
  let pos = 0, last = 0;
  return (x) => {
    const out = [];
    while (pos < x.length) {
      const i = Math.floor(pos), f = pos - i;
      const a = i === 0 ? last : x[i - 1], b = x[i];
      out.push(a + (b - a) * f);
      pos += step;
    }
    pos -= x.length;
    last = x[x.length - 1];
    return Float32Array.from(out);
  };
}

async function startMicrophone() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false,
      noiseSuppression: false, autoGainControl: false } });
    const ctx = new AudioContext({ sampleRate: SAMPLE_RATE });
    await ctx.audioWorklet.addModule('/static/capture.js');
    const node = new AudioWorkletNode(ctx, 'talkface-capture', { processorOptions: { block: 640 } });
    const resample = makeResampler(ctx.sampleRate);
    node.port.onmessage = (event) => sendSamples(resample(event.data), performance.now());
    ctx.createMediaStreamSource(stream).connect(node);
    live.ctx = ctx;
    live.wanted = true;
    startUtterance();
    $('mic').textContent = 'Microphone on';
    $('mic').disabled = true;
  } catch (e) {
    showError(`no microphone: ${e.message}`);
  }
}

async function playFile(file) {
  try {
    const bytes = await file.arrayBuffer();
    const decoded = await new AudioContext().decodeAudioData(bytes);
    const offline = new OfflineAudioContext(1, Math.ceil(decoded.duration * SAMPLE_RATE), SAMPLE_RATE);
    const src = offline.createBufferSource();
    src.buffer = decoded;
    src.connect(offline.destination);
    src.start();
    const samples = (await offline.startRendering()).getChannelData(0);
    const ctx = new AudioContext();
    const player = ctx.createBufferSource();
    player.buffer = decoded;
    player.connect(ctx.destination);
    live.wanted = true;
    startUtterance();
    await new Promise((resolve) => {
      const wait = () => (live.streaming ? resolve() : setTimeout(wait, 20));
      wait();
    });
    player.start();
    const start = performance.now(), block = 640;
    let sent = 0;
    clearInterval(live.fileTimer);
    live.fileTimer = setInterval(() => {  // paced at 1x, as if the file were spoken into the microphone
      const due = Math.min(samples.length, Math.floor((performance.now() - start) / 1000 * SAMPLE_RATE));
      while (sent + block <= due || (due === samples.length && sent < due)) {
        const stop = Math.min(sent + block, samples.length);
        sendSamples(samples.subarray(sent, stop), performance.now());
        sent = stop;
      }
      if (sent >= samples.length) { clearInterval(live.fileTimer); endUtterance(); }
    }, 20);
  } catch (e) {
    showError(`cannot play ${file.name}: ${e.message || e}`);
  }
}

async function startLive() {
  $('live').hidden = false;
  const meta = await getJSON('/api/live');
  const [template, faces] = await Promise.all([getArray('/api/live/template', Float32Array),
                                               getArray('/api/live/faces', Uint32Array)]);
  live.meta = { ...meta };
  live.mesh = makeMesh(template, faces);
  scene.add(live.mesh);
  panes.push({ object: live.mesh, label: 'live' });
  applyMaterials();
  for (const name of meta.styles) {
    const option = document.createElement('option');
    option.value = option.textContent = name;
    $('style').appendChild(option);
  }
  if (!meta.styles.includes(meta.style)) {
    const option = document.createElement('option');
    option.value = option.textContent = meta.style;
    $('style').appendChild(option);
  }
  $('style').value = meta.style;
  $('lookahead').value = meta.lookahead_ms;
  $('lookahead-shown').textContent = `${meta.lookahead_ms} ms`;
  const params = new URLSearchParams(location.search);
  if (params.has('seconds')) live.maxSamples = Math.round(Number(params.get('seconds')) * SAMPLE_RATE);
  const restart = () => { if (live.wanted) { endUtterance(); startUtterance(); } };
  $('style').addEventListener('change', restart);
  $('lookahead').addEventListener('change', restart);
  $('mic').addEventListener('click', startMicrophone);
  document.body.addEventListener('dragover', (e) => { e.preventDefault(); document.body.classList.add('dragging'); });
  document.body.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
  document.body.addEventListener('drop', (e) => {
    e.preventDefault();
    document.body.classList.remove('dragging');
    if (e.dataTransfer.files.length) playFile(e.dataTransfer.files[0]);
  });
  window.talkface.playFile = playFile;
  window.talkface.dropSocket = () => live.socket.close();  // for tests: the page must reconnect
  window.talkface.startMicrophone = startMicrophone;
  connect();
  state.ready = true;
  if (params.has('autostart')) startMicrophone();
}

// ------------------------------------------------------------------------------------------ main loop
const timing = { last: 0, ticks: 0, busyMs: 0, intervalMs: 0 };
state.timing = timing;
function loop(now) {
  const start = performance.now();
  try {
    if (state.mode === 'live') tickLive(); else tickOffline();
    render();
  } catch (e) {
    showError(`drawing failed: ${e.message}`);
  }
  // how long the page's own work takes per animation frame, and how often the browser calls it (ms)
  if (timing.last) {
    timing.ticks += 1;
    timing.busyMs += (performance.now() - start - timing.busyMs) / Math.min(timing.ticks, 60);
    timing.intervalMs += (now - timing.last - timing.intervalMs) / Math.min(timing.ticks, 60);
  }
  timing.last = now;
  requestAnimationFrame(loop);
}

async function main() {
  try {
    const list = await getJSON('/api/items');
    state.mode = list.mode;
    if (list.mode === 'live') await startLive(); else await startOffline();
  } catch (e) {
    showError(e.message);
  }
  window.talkface.seek = seek;
  window.talkface.setPlaying = setPlaying;
  requestAnimationFrame(loop);
}

main();
