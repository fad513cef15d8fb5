import io

from llm_pipeline.data.sources.debian import read_descriptions, split_description

PACKAGES = """\
Package: foo-utils
Source: foo (1.2)
Version: 1.2-1
Section: contrib/utils
Description: Foo utilities
Description-md5: aaa

Package: bar
Version: 2
Section: libs
Description: Bar library
Description-md5: bbb

Package: empty
Section: misc
Description-md5: ccc

Package: bar-again
Section: doc
Description-md5: bbb
"""

TRANSLATION = """\
Package: foo-utils
Description-md5: aaa
Description-en: Foo utilities
 The first paragraph spans
 two lines.
 .
 Second paragraph:
  * item one
    continued
  * item two

Package: bar
Description-md5: bbb
Description-en: Bar library
 Bar does things.

Package: empty
Description-md5: ccc
Description-en: Nothing more

Package: orphan
Description-md5: ddd
Description-en: Not in Packages
 Some text.
"""


def test_split_description_paragraphs_and_lists():
    synopsis, long = split_description(TRANSLATION.split("Description-en: ")[1].split("\n\nPackage")[0])
    assert synopsis == "Foo utilities"
    assert long == ("The first paragraph spans two lines.\n\nSecond paragraph:\n* item one continued\n* item two")


def test_read_descriptions_joins_on_md5():
    records, dropped = read_descriptions([io.StringIO(PACKAGES)], [io.StringIO(TRANSLATION)])
    by_pkg = {r.package: r for r in records}
    assert set(by_pkg) == {"foo-utils", "bar"}  # one record per md5: bbb kept once
    foo = by_pkg["foo-utils"]
    assert (foo.source, foo.section, foo.synopsis) == ("foo", "utils", "Foo utilities")
    assert foo.long_description.startswith("The first paragraph spans two lines.\n\nSecond")
    bar = by_pkg["bar"]
    assert (bar.source, bar.section, bar.long_description) == ("bar", "libs", "Bar does things.")
    assert {(q.location, q.reason) for q in dropped} == {
        ("empty", "empty_long_description"),
        ("orphan", "not_in_packages"),
    }
