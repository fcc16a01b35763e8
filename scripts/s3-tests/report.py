"""Prints the scores of a scripts/s3-tests.sh run: per group, how many of the selected tests
pass on SeaweedFS and on the front, then the tests that pass on SeaweedFS and fail on the front
(with the first line of the front's failure), and those that pass on the front only.

    report.py <scratch directory of the run>
"""
import collections
import sys
import xml.etree.ElementTree as ET

GROUP_ORDER = ["object", "listing", "multipart", "copy", "conditional", "range", "sigv4"]


def outcomes(path):
    """test name -> ("passed" | "failed" | "error" | "skipped", first line of the message)."""
    try:
        root = ET.parse(path).getroot()
    except (FileNotFoundError, ET.ParseError):
        return {}
    result = {}
    for case in root.iter("testcase"):
        state, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                state = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or child.text or "").strip().splitlines()
                message = message[0] if message else ""
                break
        name = case.get("name", "").split("[")[0]
        result[name] = (state, message)
    return result


def main():
    work = sys.argv[1]
    selection = [line.split() for line in open(f"{work}/selection.txt") if line.strip()]
    sw = outcomes(f"{work}/seaweedfs.xml")
    front = outcomes(f"{work}/front.xml")
    counts = collections.defaultdict(lambda: [0, 0, 0])
    for group, name in selection:
        ran = name in sw or name in front
        if not ran:
            continue
        counts[group][0] += 1
        counts[group][1] += sw.get(name, ("",))[0] == "passed"
        counts[group][2] += front.get(name, ("",))[0] == "passed"
    print(f"{'group':<12} {'tests':>5} {'SeaweedFS':>9} {'front':>5}")
    total = [0, 0, 0]
    for group in GROUP_ORDER:
        if group in counts:
            c = counts[group]
            total = [a + b for a, b in zip(total, c)]
            print(f"{group:<12} {c[0]:>5} {c[1]:>9} {c[2]:>5}")
    print(f"{'total':<12} {total[0]:>5} {total[1]:>9} {total[2]:>5}")
    print()
    print("pass on SeaweedFS, fail on the front:")
    for group, name in selection:
        if sw.get(name, ("",))[0] == "passed" and name in front and front[name][0] != "passed":
            state, message = front[name]
            print(f"  {group:<11} {name}  [{state}] {message[:160]}")
    print()
    print("pass on the front, fail on SeaweedFS:")
    for group, name in selection:
        if front.get(name, ("",))[0] == "passed" and name in sw and sw[name][0] != "passed":
            state, message = sw[name]
            print(f"  {group:<11} {name}  [{state}] {message[:160]}")


if __name__ == "__main__":
    main()
