//go:build cgo && !nolibjpeg

package evidence

/*
#cgo LDFLAGS: -ljpeg
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>

struct fs_err {
	struct jpeg_error_mgr pub;
	jmp_buf jb;
	char msg[JMSG_LENGTH_MAX];
};

static void fs_error_exit(j_common_ptr c) {
	struct fs_err *e = (struct fs_err *)c->err;
	(*c->err->format_message)(c, e->msg);
	longjmp(e->jb, 1);
}

static void fs_output_message(j_common_ptr c) { (void)c; }

// fs_decode decodes the JPEG in buf[0:len] at 1/denom scale into RGB.
// On success it returns 0 and *out (malloc'd, *w × *h × 3 bytes), which
// the caller frees; on failure it returns 1 and the message in msg.
// libjpeg may use at most maxmem bytes of its own (progressive files hold
// their coefficients; beyond that it fails instead of growing).
static int fs_decode(const unsigned char *buf, unsigned long len, int denom, long maxmem,
                     unsigned char **out, int *w, int *h, char *msg, int msglen) {
	struct jpeg_decompress_struct cinfo;
	struct fs_err jerr;
	unsigned char *volatile pix = NULL;
	memset(&cinfo, 0, sizeof cinfo);
	cinfo.err = jpeg_std_error(&jerr.pub);
	jerr.pub.error_exit = fs_error_exit;
	jerr.pub.output_message = fs_output_message;
	jerr.msg[0] = 0;
	if (setjmp(jerr.jb)) {
		snprintf(msg, msglen, "%s", jerr.msg);
		jpeg_destroy_decompress(&cinfo);
		free(pix);
		return 1;
	}
	jpeg_create_decompress(&cinfo);
	cinfo.mem->max_memory_to_use = maxmem;
	jpeg_mem_src(&cinfo, buf, len);
	jpeg_read_header(&cinfo, TRUE);
	cinfo.scale_num = 1;
	cinfo.scale_denom = denom;
	cinfo.out_color_space = JCS_RGB;
	cinfo.dct_method = JDCT_ISLOW;
	jpeg_start_decompress(&cinfo);
	if (cinfo.output_components != 3) {
		snprintf(msg, msglen, "%d components", cinfo.output_components);
		jpeg_destroy_decompress(&cinfo);
		return 1;
	}
	size_t stride = (size_t)cinfo.output_width * 3;
	pix = malloc(stride * cinfo.output_height);
	if (!pix) {
		snprintf(msg, msglen, "out of memory");
		jpeg_destroy_decompress(&cinfo);
		return 1;
	}
	while (cinfo.output_scanline < cinfo.output_height) {
		JSAMPROW row = pix + stride * cinfo.output_scanline;
		jpeg_read_scanlines(&cinfo, &row, 1);
	}
	jpeg_finish_decompress(&cinfo);
	*w = cinfo.output_width;
	*h = cinfo.output_height;
	*out = pix;
	jpeg_destroy_decompress(&cinfo);
	return 0;
}
*/
import "C"

import (
	"fmt"
	"image"
	"io"
	"unsafe"
)

// haveScaledJPEG reports whether decodeJPEGScaled is libjpeg's (built with
// cgo and without the nolibjpeg tag).
const haveScaledJPEG = true

// libjpegMemory is what libjpeg may allocate for itself per decode (a
// progressive JPEG keeps all its coefficients: 2 bytes per sample).
const libjpegMemory = 32 << 20

// decodeJPEGScaled decodes the JPEG in r (size bytes) at 1/denom of its
// size with libjpeg-turbo's DCT scaling, which never builds the
// full-size image.
func decodeJPEGScaled(r io.ReaderAt, size int64, denom int) (image.Image, error) {
	if size <= 0 {
		return nil, fmt.Errorf("evidence: jpeg: empty")
	}
	buf := C.malloc(C.size_t(size))
	if buf == nil {
		return nil, fmt.Errorf("evidence: jpeg: out of memory")
	}
	defer C.free(buf)
	b := unsafe.Slice((*byte)(buf), size)
	if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("evidence: jpeg: read: %w", err)
	}
	var out *C.uchar
	var w, h C.int
	var msg [200]C.char
	if C.fs_decode((*C.uchar)(buf), C.ulong(size), C.int(denom), C.long(libjpegMemory), &out, &w, &h, &msg[0], C.int(len(msg))) != 0 {
		return nil, fmt.Errorf("evidence: jpeg: %s", C.GoString(&msg[0]))
	}
	defer C.free(unsafe.Pointer(out))
	rgb := unsafe.Slice((*byte)(unsafe.Pointer(out)), int(w)*int(h)*3)
	img := image.NewRGBA(image.Rect(0, 0, int(w), int(h)))
	for i, j := 0, 0; i < len(rgb); i, j = i+3, j+4 {
		img.Pix[j], img.Pix[j+1], img.Pix[j+2], img.Pix[j+3] = rgb[i], rgb[i+1], rgb[i+2], 0xff
	}
	return img, nil
}
