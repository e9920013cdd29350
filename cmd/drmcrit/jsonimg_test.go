package main

import (
	"drmcr/kernelsim/uapi"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"drmcr/images"
)

// noNulls fails on a null anywhere in a JSON document, but for keys
// documented as null when unknown (show's "fd").
func noNulls(t *testing.T, path string, v any, nullable ...string) {
	t.Helper()
	switch v := v.(type) {
	case nil:
		t.Errorf("%s is null", path)
	case map[string]any:
		for k, x := range v {
			if x == nil && slices.Contains(nullable, k) {
				continue
			}
			noNulls(t, path+"."+k, x, nullable...)
		}
	case []any:
		for i, x := range v {
			noNulls(t, fmt.Sprintf("%s[%d]", path, i), x, nullable...)
		}
	}
}

// decodeJSON runs drmcrit decode on an image of dir and parses the JSON
// with 64-bit integers intact.
func decodeJSON(t *testing.T, dir, name string) map[string]any {
	t.Helper()
	code, out, errs := runCmd(t, nil, "decode", filepath.Join(dir, name))
	if code != 0 || errs != "" {
		t.Fatalf("decode %s: %d %s", name, code, errs)
	}
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	must(t, dec.Decode(&m))
	noNulls(t, name, m)
	return m
}

// TestJSONConvention: decode and show --json print the same facts the
// same way: integers as numbers, VAs and flags as hex strings, digests as
// hex, enums without their prefix, lists as [].
func TestJSONConvention(t *testing.T) {
	f := richFixture(t)
	_, out, _ := runCmd(t, nil, "show", "--json", f.dir)
	var v View
	must(t, json.Unmarshal([]byte(out), &v))
	var raw any
	must(t, json.Unmarshal([]byte(out), &raw))
	noNulls(t, "show", raw, "fd")
	var showBo *BoView
	for i := range v.Bos {
		if v.Bos[i].BoID == f.sharedBo {
			showBo = &v.Bos[i]
		}
	}
	if showBo == nil {
		t.Fatalf("show --json lacks BO %d", f.sharedBo)
	}

	index := decodeJSON(t, f.dir, images.IndexName)
	var bo map[string]any
	var checksums []string
	for _, e := range index["entries"].([]any) {
		entry := e.(map[string]any)
		if b, ok := entry["bo"].(map[string]any); ok && b["state"].(map[string]any)["bo_id"] == json.Number(fmt.Sprint(f.sharedBo)) {
			bo = b
		}
		if c, ok := entry["chunk"].(map[string]any); ok {
			checksums = append(checksums, c["chunk"].(map[string]any)["checksum"].(string))
		}
	}
	if bo == nil {
		t.Fatalf("decode of the index lacks BO %d", f.sharedBo)
	}
	st := bo["state"].(map[string]any)
	for k, want := range map[string]any{
		"bo_id":        json.Number(fmt.Sprint(f.sharedBo)),
		"size":         json.Number(fmt.Sprint(showBo.Size)),
		"dmabuf_inode": json.Number(fmt.Sprint(showBo.DmabufInode)),
		"flags":        showBo.Flags, // "0x3" in both
		"domain":       showBo.Domain,
	} {
		if st[k] != want {
			t.Errorf("decode state.%s = %#v, show says %#v", k, st[k], want)
		}
	}
	if bo["offset"] != json.Number(fmt.Sprint(showBo.Offset)) {
		t.Errorf("decode offset %#v, show says %d", bo["offset"], showBo.Offset)
	}
	for _, c := range checksums {
		if len(c) != 2*uapi.DefaultChecksum.Size() || strings.ToLower(c) != c {
			t.Errorf("chunk checksum %q, want %d lowercase hex digits", c, 2*uapi.DefaultChecksum.Size())
		}
	}
	if len(checksums) == 0 {
		t.Error("the index has no chunks")
	}

	file := decodeJSON(t, f.dir, images.FileName(f.inoA))
	fst := file["state"].(map[string]any)
	maps := fst["mappings"].([]any)
	var showVAs []string
	for _, fv := range v.Files {
		if fv.Inode == f.inoA {
			for _, h := range fv.Handles {
				for _, m := range h.Mappings {
					showVAs = append(showVAs, m.VA)
				}
			}
		}
	}
	if len(maps) != 2 || len(showVAs) != 2 {
		t.Fatalf("mappings: decode %v, show %v", maps, showVAs)
	}
	for i, m := range maps {
		if va := m.(map[string]any)["va"]; va != showVAs[i] || !strings.HasPrefix(va.(string), "0x") {
			t.Errorf("mapping %d: decode va %#v, show %q", i, va, showVAs[i])
		}
	}
	// Lists are present even when empty, and zero values are printed.
	if l, ok := fst["waits_on_fences"].([]any); !ok || len(l) != 0 {
		t.Errorf("waits_on_fences = %#v, want []", fst["waits_on_fences"])
	}
	if _, ok := fst["owner_pid"].(json.Number); !ok {
		t.Errorf("owner_pid = %#v", fst["owner_pid"])
	}
	if _, ok := fst["driver_private"].(string); !ok {
		t.Errorf("driver_private = %#v, want a hex string", fst["driver_private"])
	}
	inv := decodeJSON(t, f.dir, images.InventoryName)
	if _, ok := inv["files"].([]any)[0].(json.Number); !ok {
		t.Errorf("inventory files = %#v, want numbers", inv["files"])
	}
}

// TestEncodeRefuses: encode reads exactly the convention and says where
// the JSON is wrong.
func TestEncodeRefuses(t *testing.T) {
	good := `{"version": 2, "inode": 7, "state": {"file_id": 7, "driver_private": "00ff", "bos": [{"bo_id": 7, "size": 4096, "domain": "VRAM", "flags": "0x3"}]}}`
	if code, _, errs := runCmd(t, []byte(good), "encode", "drm-file-7.img"); code != 0 {
		t.Fatalf("encode of good JSON: %d %s", code, errs)
	}
	for _, tc := range []struct{ js, msg string }{
		{`{"version": 1, "version": 1}`, `"version" given twice`},
		{`{"version": 4294967296}`, "version: want an unsigned 32-bit integer, got 4294967296"},
		{`{"version": -1}`, "version: want an unsigned 32-bit integer"},
		{`{"version": 1.5}`, "version: want an unsigned 32-bit integer"},
		{`{"version": "1"}`, `version: want an unsigned 32-bit integer, got "1"`},
		{`{"state": {"bos": [{"flags": 3}]}}`, `flags: want a 64-bit hex string ("0x1000"), got 3`},
		{`{"state": {"bos": [{"flags": "0xzz"}]}}`, "flags: want a 64-bit hex string"},
		{`{"state": {"bos": [{"domain": "DOMAIN_VRAM"}]}}`, `domain: want one of "NONE", "VRAM", "GTT" or a number`},
		{`{"state": {"bo_idd": 1}}`, `state: unknown field "bo_idd" of FileCheckpoint`},
		{`{"state": {"driver_private": "00FF"}}`, "state.driver_private: want a lowercase hex string"},
		{`{"state": {"driver_private": "0f0"}}`, "state.driver_private: want a lowercase hex string"},
		{`{"state": null}`, "state: want an object, got null"},
		{`[]`, "want an object, got ["},
		{`{"version": 1} {}`, "data after the JSON object"},
		{`{"version": 1`, "EOF"},
	} {
		code, _, errs := runCmd(t, []byte(tc.js), "encode", "drm-file-7.img")
		if code != 1 || !strings.Contains(errs, "JSON for drm-file-7.img: ") || !strings.Contains(errs, tc.msg) {
			t.Errorf("encode %s: %d %q, want %q", tc.js, code, errs, tc.msg)
		}
	}
	code, _, errs := runCmd(t, []byte(`{"files": null}`), "encode", "drm-inventory.img")
	if code != 1 || !strings.Contains(errs, "files: want a list, got null") {
		t.Errorf("null list: %d %q", code, errs)
	}
	code, _, errs = runCmd(t, []byte(`{"files": [1, "2"]}`), "encode", "drm-inventory.img")
	if code != 1 || !strings.Contains(errs, `files[1]: want an unsigned 64-bit integer, got "2"`) {
		t.Errorf("bad list element: %d %q", code, errs)
	}
}

// TestEnumPrefix: the prefix the style guide gives enum values.
func TestEnumPrefix(t *testing.T) {
	if got := enumPrefix(images.File_images_images_proto.Messages().ByName("Bo").Fields().ByName("state").Message().Fields().ByName("domain").Enum()); got != "DOMAIN_" {
		t.Errorf("Domain: %q", got)
	}
}
