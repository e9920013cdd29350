// Command drmcrit inspects the GPU (DRM) state of a CRIU checkpoint made
// with the drm_plugin: the DRM counterpart of CRIU's crit.
//
//	drmcrit info DIR               one screen: counts, sizes, versions, verdict
//	drmcrit x DIR ps|fds           CRIU's process tree or fds, GPU files named
//	drmcrit show [--json] DIR      process → fd → drm file → BOs/contexts, dma-bufs
//	drmcrit decode [-o OUT] FILE   a DRM image as JSON
//	drmcrit encode [-i JSON] [-o IMAGE [--reseal]] [NAME]
//	                               JSON back into an image (kind from NAME or -o);
//	                               --reseal re-seals it in its directory
//	drmcrit verify [-target RUNDIR [-device-map MAP]] DIR
//	                               consistency checks, one line per problem;
//	                               -target: against a kernelsimd's devices too
//	drmcrit graph [-o FILE] DIR    the sharing graph as Graphviz DOT (.svg/.png via dot)
//	drmcrit help [json|verify]     the JSON schema of show --json, verify's checks
//
// Process names and fd numbers come from CRIU's own images (pstree.img,
// core-<pid>.img, ids-<pid>.img, fdinfo-<id>.img, files.img; info and x
// also read inventory.img and fs-<pid>.img), read with
// go-criu's crit package; without them (a directory written by the
// plugin's in-process tests) they come from the plugin's inventory and fd
// numbers are unknown ("?" in text, null in JSON).
//
// Exit status: 0 success, 1 problems or errors, 2 usage.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"drmcr/drmcore"
)

const usage = `usage:
  drmcrit info DIR                 the checkpoint on one screen: counts, sizes, versions, verdict
  drmcrit x DIR ps                 CRIU's process tree (as crit x ps), with each process's GPU files
  drmcrit x DIR fds                every fd of every process (as crit x fds), drm files and
                                   dma-bufs named
  drmcrit show [--json] DIR        tree of the GPU state: process → fd → drm file → BOs, contexts; dma-bufs
  drmcrit decode [-o OUT] FILE     print a DRM image (drm-*.img) as JSON
  drmcrit encode [-i JSON] [-o IMAGE [--reseal]] [NAME]
                                   JSON (stdin or -i) back into an image (stdout or -o);
                                   the image kind comes from NAME or from -o's file name;
                                   --reseal records it in the seals of -o's directory
  drmcrit verify [-target RUNDIR [-device-map MAP]] DIR
                                   check the GPU state; one line per problem;
                                   -target: and whether it restores on that
                                   kernelsimd's devices, onto which
  drmcrit graph [-o FILE] DIR      sharing graph as Graphviz DOT (stdout, .dot/.gv);
                                   .svg and .png are rendered with dot
  drmcrit help [json|verify]       the JSON schema of show --json; what verify checks

exit status: 0 success, 1 problems or errors, 2 usage
`

// usageErr is a command-line mistake: exit status 2.
type usageErr struct{ msg string }

func (e *usageErr) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageErr{fmt.Sprintf(format, args...)}
}

// errProblems is returned by verify when it printed problems.
var errProblems = errors.New("problems found")

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is drmcrit with its arguments and stdio; it returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "info":
		err = cmdInfo(rest, stdout)
	case "x":
		err = cmdExplore(rest, stdout)
	case "show":
		err = cmdShow(rest, stdout)
	case "decode":
		err = cmdDecode(rest, stdout, stderr)
	case "encode":
		err = cmdEncode(rest, stdin, stdout, stderr)
	case "verify":
		err = cmdVerify(rest, stdout)
	case "graph":
		err = cmdGraph(rest, stdout)
	case "help", "-h", "-help", "--help":
		err = cmdHelp(rest, stdout)
	default:
		err = usageErrorf("unknown command %q", cmd)
	}
	var ue *usageErr
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "drmcrit: %s\n%s", plainText(err.Error()), usage)
		return 2
	case errors.Is(err, errProblems):
		return 1
	default:
		fmt.Fprintf(stderr, "drmcrit: %s\n", plainText(err.Error()))
		return 1
	}
}

// parse parses flags that may come before or after the positional
// arguments, and checks the number of positional arguments.
func parse(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageErrorf("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) < min || len(pos) > max {
		switch {
		case min == max && min == 1:
			return nil, usageErrorf("%s takes one argument, got %d", fs.Name(), len(pos))
		default:
			return nil, usageErrorf("%s takes %d to %d arguments, got %d", fs.Name(), min, max, len(pos))
		}
	}
	return pos, nil
}

func cmdShow(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("show", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON (see drmcrit help json)")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := load(pos[0])
	if err != nil {
		return err
	}
	v := buildView(c)
	v.Problems = append(v.Problems, verifyCheckpoint(c)...)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	writeText(stdout, v)
	return nil
}

func cmdInfo(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("info", flag.ContinueOnError)
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := load(pos[0])
	if err != nil {
		return err
	}
	writeInfo(stdout, c)
	return nil
}

func cmdExplore(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	pos, err := parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	what := pos[1]
	if what != "ps" && what != "fds" {
		return usageErrorf("x %s %s: what to explore is ps or fds", pos[0], what)
	}
	c, err := load(pos[0])
	if err != nil {
		return err
	}
	switch {
	case c.criu == nil && c.criuErr != nil:
		return fmt.Errorf("%s: %w: they are unusable: %v", c.dir, errNeedCriu, c.criuErr)
	case c.criu == nil:
		return fmt.Errorf("%s: %w, and it has only the plugin's (drmcrit show lists the GPU files)", c.dir, errNeedCriu)
	}
	v := buildView(c)
	if what == "ps" {
		writePs(stdout, c, v)
	} else {
		writeFds(stdout, c, v)
	}
	return nil
}

func cmdDecode(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("decode", flag.ContinueOnError)
	in := fs.String("i", "", "the image (instead of FILE)")
	out := fs.String("o", "", "write the JSON here instead of standard output")
	pos, err := parse(fs, args, 0, 1)
	if err != nil {
		return err
	}
	name := *in
	if len(pos) == 1 {
		if name != "" {
			return usageErrorf("decode: give the image as FILE or with -i, not both")
		}
		name = pos[0]
	}
	if name == "" {
		return usageErrorf("decode: which image? (drmcrit decode FILE)")
	}
	if _, err := imageKind(name, "decode"); err != nil {
		return err
	}
	data, err := readIn(name, nil)
	if err != nil {
		return err
	}
	js, err := decodeImage(name, data, func(s string) { fmt.Fprintf(stderr, "drmcrit: warning: %s\n", plainText(s)) })
	if err != nil {
		return err
	}
	return writeOut(*out, js, stdout)
}

func cmdEncode(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("encode", flag.ContinueOnError)
	in := fs.String("i", "", "read the JSON from this file instead of standard input")
	out := fs.String("o", "", "write the image here instead of standard output")
	reseal := fs.Bool("reseal", false, "record the new image's seal in the inventory of -o's directory (and re-seal the inventory)")
	pos, err := parse(fs, args, 0, 1)
	if err != nil {
		return err
	}
	if *reseal && (*out == "" || *out == "-") {
		return usageErrorf("encode --reseal: name the image to write with -o: its directory's inventory is re-sealed")
	}
	name := *out
	if len(pos) == 1 {
		name = pos[0]
	}
	if name == "" || name == "-" {
		return usageErrorf("encode: name the image (drmcrit encode drm-bo-7.img, or -o drm-bo-7.img): its kind comes from its name")
	}
	if _, err := imageKind(name, "encode"); err != nil {
		return err
	}
	js, err := readIn(*in, stdin)
	if err != nil {
		return err
	}
	data, err := encodeImage(name, js)
	if err != nil {
		return err
	}
	if *out == "" || *out == "-" {
		_, err := stdout.Write(data)
		return err
	}
	return writeImage(*out, data, *reseal, func(s string) { fmt.Fprintf(stderr, "drmcrit: %s\n", plainText(s)) })
}

func cmdVerify(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	target := fs.String("target", "", "also check against the devices of the kernelsimd at this runtime directory, as a restore there would (map them, then the kernel's checks)")
	devMap := fs.String("device-map", os.Getenv(drmcore.DeviceMapSetting), "with -target: the restore's DRMCR_DEVICE_MAP (default: $DRMCR_DEVICE_MAP)")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	explicit, err := drmcore.ParseDeviceMap(*devMap)
	if err != nil {
		return usageErrorf("verify -device-map: %v", err)
	}
	c, err := load(pos[0])
	if err != nil {
		return err
	}
	probs := verifyCheckpoint(c)
	if *target != "" {
		mapping, tprobs, err := verifyTarget(c, *target, explicit)
		if err != nil {
			return err
		}
		if mapping != "" {
			fmt.Fprintf(stdout, "%s: on %s: GPU devices: %s\n", filepath.Clean(pos[0]), *target, mapping)
		}
		probs = append(probs, tprobs...)
	}
	for _, p := range probs {
		fmt.Fprintf(stdout, "%s: %s\n", filepath.Clean(pos[0]), p)
	}
	if len(probs) > 0 {
		fmt.Fprintf(stdout, "%d problem(s)\n", len(probs))
		return errProblems
	}
	fmt.Fprintf(stdout, "%s: GPU state OK\n", filepath.Clean(pos[0]))
	return nil
}

func cmdGraph(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("graph", flag.ContinueOnError)
	out := fs.String("o", "", "write to FILE: .dot/.gv as DOT, .svg/.png rendered with Graphviz's dot")
	pos, err := parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *out != "" {
		switch strings.ToLower(filepath.Ext(*out)) {
		case ".dot", ".gv", ".svg", ".png":
		default:
			return usageErrorf("graph -o %s: the output must end in .svg, .png, .dot or .gv", *out)
		}
	}
	c, err := load(pos[0])
	if err != nil {
		return err
	}
	v := buildView(c)
	if *out == "" || *out == "-" {
		return writeDOT(stdout, v)
	}
	return renderGraph(v, *out)
}

func cmdHelp(args []string, stdout io.Writer) error {
	if len(args) > 1 {
		return usageErrorf("help takes at most one topic")
	}
	topic := ""
	if len(args) == 1 {
		topic = args[0]
	}
	switch topic {
	case "":
		fmt.Fprint(stdout, usage)
	case "json":
		fmt.Fprint(stdout, jsonConvention+"\n"+jsonHelp)
	case "verify":
		fmt.Fprint(stdout, verifyChecks)
	default:
		return usageErrorf("no help on %q (topics: json, verify)", topic)
	}
	return nil
}
