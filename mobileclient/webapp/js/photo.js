// Photos on the device: downscale to the configured size with a canvas
// while keeping the original's EXIF block (capture time, GPS) and ICC
// profile, as mobileclient's processPhoto does in Go. A canvas drops all
// metadata, so the APP1/APP2 segments are read from the original JPEG and
// spliced into the canvas output.

export const MAX_PHOTO_PX = 1600; // mobileclient Options.MaxPhotoPx default
export const PHOTO_QUALITY = 0.85; // mobileclient Options.PhotoQuality default
// MAX_DECODE_PX bounds the pictures decoded on the device: a 100 MP
// bitmap takes 400 MB, more than a field tablet can spare.
export const MAX_DECODE_PX = 100e6;

/** jpegSize reads a JPEG's pixel size from its SOF marker, or null. */
export function jpegSize(b) {
  if (b.length < 4 || b[0] !== 0xff || b[1] !== 0xd8) return null;
  let i = 2;
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) return null;
    const m = b[i + 1];
    if (m === 0xff) { i++; continue; }
    if (m === 0xd9 || m === 0xda) return null;
    if (m === 0x01 || (m >= 0xd0 && m <= 0xd7)) { i += 2; continue; }
    const n = (b[i + 2] << 8) | b[i + 3];
    if (n < 2 || i + 2 + n > b.length) return null;
    if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
      return { h: (b[i + 5] << 8) | b[i + 6], w: (b[i + 7] << 8) | b[i + 8] };
    }
    i += 2 + n;
  }
  return null;
}

/** pngSize reads a PNG's pixel size from IHDR, or null. */
export function pngSize(b) {
  if (b.length < 24 || b[0] !== 0x89 || b[1] !== 0x50) return null;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { w: dv.getUint32(16), h: dv.getUint32(20) };
}

const EXIF_PREFIX = [0x45, 0x78, 0x69, 0x66, 0, 0]; // "Exif\0\0"
const ICC_PREFIX = [...'ICC_PROFILE'].map((c) => c.charCodeAt(0)).concat([0]);
const startsWith = (b, off, p) => p.every((v, k) => b[off + k] === v);

/**
 * metadataSegments returns copies of the first EXIF APP1 segment and every
 * ICC APP2 segment (marker and length included) of a JPEG's header.
 */
export function metadataSegments(b) {
  let exif = null;
  const icc = [];
  if (b.length < 4 || b[0] !== 0xff || b[1] !== 0xd8) return { exif, icc };
  let i = 2;
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) break;
    const m = b[i + 1];
    if (m === 0xff) { i++; continue; }
    if (m === 0xda || m === 0xd9) break;
    if (m === 0x01 || (m >= 0xd0 && m <= 0xd7)) { i += 2; continue; }
    const n = (b[i + 2] << 8) | b[i + 3];
    if (n < 2 || i + 2 + n > b.length) break;
    if (m === 0xe1 && !exif && startsWith(b, i + 4, EXIF_PREFIX)) exif = b.slice(i, i + 2 + n);
    else if (m === 0xe2 && startsWith(b, i + 4, ICC_PREFIX)) icc.push(b.slice(i, i + 2 + n));
    i += 2 + n;
  }
  return { exif, icc };
}

/**
 * patchEXIF sets, in place, the pixel size an EXIF TIFF block declares and
 * its orientation to 1 (the canvas drew the pixels upright). tiff is the
 * part after "Exif\0\0". Anything it cannot parse is left alone.
 */
export function patchEXIF(tiff, w, h) {
  if (tiff.length < 8) return;
  const dv = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  const bom = String.fromCharCode(tiff[0], tiff[1]);
  if (bom !== 'II' && bom !== 'MM') return;
  const le = bom === 'II';
  if (dv.getUint16(2, le) !== 42) return;
  const vals = new Map([[0x0100, w], [0x0101, h], [0xa002, w], [0xa003, h], [0x0112, 1]]);
  const walk = (off, follow) => {
    if (off + 2 > tiff.length) return;
    const n = dv.getUint16(off, le);
    for (let k = 0; k < n; k++) {
      const e = off + 2 + 12 * k;
      if (e + 12 > tiff.length) return;
      const tag = dv.getUint16(e, le); const typ = dv.getUint16(e + 2, le); const count = dv.getUint32(e + 4, le);
      if (count !== 1) continue;
      if (tag === 0x8769 && follow && typ === 4) { walk(dv.getUint32(e + 8, le), false); continue; }
      if (!vals.has(tag)) continue;
      const v = vals.get(tag);
      if (typ === 3 && v <= 0xffff) dv.setUint16(e + 8, v, le);
      else if (typ === 4) dv.setUint32(e + 8, v, le);
    }
  };
  walk(dv.getUint32(4, le), true);
}

/**
 * spliceSegments puts whole segments right after SOI, dropping a JFIF APP0
 * the encoder wrote (EXIF comes first, as the EXIF standard wants).
 */
export function spliceSegments(jpg, segs) {
  if (segs.length === 0) return jpg;
  let rest = jpg.subarray(2);
  if (rest[0] === 0xff && rest[1] === 0xe0) {
    const n = (rest[2] << 8) | rest[3];
    rest = rest.subarray(2 + n);
  }
  const total = 2 + segs.reduce((a, s) => a + s.length, 0) + rest.length;
  const out = new Uint8Array(total);
  out.set(jpg.subarray(0, 2), 0);
  let o = 2;
  for (const s of segs) { out.set(s, o); o += s.length; }
  out.set(rest, o);
  return out;
}

/** scaledSize fits w×h into maxPx on the long side (as mobileclient). */
export function scaledSize(w, h, maxPx) {
  if (w >= h) return [maxPx, Math.max(1, Math.round((h * maxPx) / w))];
  return [Math.max(1, Math.round((w * maxPx) / h)), maxPx];
}

/**
 * processPhoto returns {blob, mediaType, width, height} to store for a
 * picked image file: a JPEG or PNG no larger than maxPx is kept byte for
 * byte; a bigger one is downscaled to a JPEG carrying the original's EXIF
 * and ICC segments. Other images (HEIC, WebP) are drawn to a JPEG.
 */
export async function processPhoto(file, maxPx = MAX_PHOTO_PX, quality = PHOTO_QUALITY) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const type = (file.type || '').toLowerCase();
  const isJPEG = type === 'image/jpeg' || (bytes[0] === 0xff && bytes[1] === 0xd8);
  const isPNG = type === 'image/png' || (bytes[0] === 0x89 && bytes[1] === 0x50);
  const size = isJPEG ? jpegSize(bytes) : isPNG ? pngSize(bytes) : null;
  if (size && Math.max(size.w, size.h) <= maxPx) {
    return { blob: new Blob([bytes], { type: isJPEG ? 'image/jpeg' : 'image/png' }), mediaType: isJPEG ? 'image/jpeg' : 'image/png', width: size.w, height: size.h };
  }
  if (size && size.w * size.h > MAX_DECODE_PX) {
    throw new Error(`照片像素过多（${size.w}×${size.h}，约 ${Math.round((size.w * size.h) / 1e6)} 百万像素），本机无法处理。请把相机设为普通分辨率后重拍`);
  }
  let bmp;
  try {
    bmp = await createImageBitmap(new Blob([bytes], { type: type || 'image/jpeg' }), { imageOrientation: 'from-image' });
  } catch (e) {
    throw new Error('无法读取这张照片（文件损坏、格式不支持或太大）：' + ((e && e.message) || e));
  }
  const [w, h] = Math.max(bmp.width, bmp.height) > maxPx ? scaledSize(bmp.width, bmp.height, maxPx) : [bmp.width, bmp.height];
  const canvas = document.createElement('canvas');
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#fff'; // transparent PNG pixels become white, not black
  ctx.fillRect(0, 0, w, h);
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(bmp, 0, 0, w, h);
  bmp.close();
  const out = await new Promise((res, rej) => canvas.toBlob((b) => (b ? res(b) : rej(new Error('无法编码照片'))), 'image/jpeg', quality));
  canvas.width = canvas.height = 0; // free the pixels now
  let jpg = new Uint8Array(await out.arrayBuffer());
  if (isJPEG) {
    const { exif, icc } = metadataSegments(bytes);
    const keep = [];
    if (exif) { patchEXIF(exif.subarray(10), w, h); keep.push(exif); }
    keep.push(...icc);
    jpg = spliceSegments(jpg, keep);
  }
  return { blob: new Blob([jpg], { type: 'image/jpeg' }), mediaType: 'image/jpeg', width: w, height: h };
}

/**
 * SignaturePad draws with a finger or stylus on a canvas; toBlob gives a
 * PNG. It uses pointer events, so touch, pen and mouse all work.
 */
export class SignaturePad {
  constructor(canvas, onchange) {
    this.c = canvas; this.onchange = onchange; this.empty = true;
    const ctx = canvas.getContext('2d');
    const fit = () => {
      const r = canvas.getBoundingClientRect();
      if (r.width === 0) return;
      canvas.width = Math.round(r.width); canvas.height = Math.round(r.height);
      ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.lineWidth = 3; ctx.lineCap = 'round'; ctx.lineJoin = 'round'; ctx.strokeStyle = '#000';
    };
    fit();
    let last = null;
    const pos = (e) => { const r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
    canvas.addEventListener('pointerdown', (e) => {
      if (canvas.width === 0 || canvas.width !== Math.round(canvas.getBoundingClientRect().width)) fit();
      canvas.setPointerCapture(e.pointerId); last = pos(e);
    });
    canvas.addEventListener('pointermove', (e) => {
      if (!last) return;
      const p = pos(e);
      ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...p); ctx.stroke();
      last = p; this.empty = false;
    });
    const end = () => { if (last) { last = null; if (this.onchange) this.onchange(); } };
    canvas.addEventListener('pointerup', end);
    canvas.addEventListener('pointercancel', end);
    this.clear = () => { fit(); this.empty = true; };
  }

  toBlob() {
    return new Promise((res, rej) => this.c.toBlob((b) => (b ? res(b) : rej(new Error('无法保存签名'))), 'image/png'));
  }
}
