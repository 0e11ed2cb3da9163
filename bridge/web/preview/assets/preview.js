/* The template preview page: asks the bridge to render, then draws each message as Feishu
   shows it, with its JSON and its size.

   A card's text is data, whoever wrote the template: it reaches the page only as text nodes
   and checked attributes (an http(s) href, a class from a fixed list), never as HTML. */
"use strict";

(() => {
  const PASTE = "__paste__";
  // header.template: Feishu's 13 colours (protocols.md A.5); anything else shows as default.
  const COLOURS = new Set(["blue", "wathet", "turquoise", "green", "yellow", "orange", "red", "carmine",
                           "violet", "purple", "indigo", "grey", "default"]);
  const TAG_COLOURS = new Set(["neutral", "blue", "turquoise", "lime", "orange", "violet", "indigo", "wathet",
                               "green", "yellow", "red", "purple", "carmine"]);
  const BUTTON_TYPES = new Set(["default", "primary", "danger", "text", "primary_text", "danger_text",
                                "primary_filled", "danger_filled", "laser"]);
  const state = { options: null, seq: 0, timer: 0, people: {}, last: "" };
  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function safeUrl(value) {
    if (typeof value !== "string") return null;
    try {
      const url = new URL(value);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  function anchor(url, className) {
    const a = el("a", className);
    const href = safeUrl(url);
    if (href) {
      a.href = href;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      a.title = href;
    } else {
      a.classList.add("no-link");
      a.title = "no http(s) link: Feishu opens nothing";
    }
    return a;
  }

  function own(object, key) {
    return object !== null && typeof object === "object" && Object.prototype.hasOwnProperty.call(object, key);
  }

  function firstValue(map) {
    if (!map || typeof map !== "object") return undefined;
    for (const key of ["zh_cn", "en_us", "ja_jp"]) if (own(map, key)) return map[key];
    const keys = Object.keys(map);
    return keys.length ? map[keys[0]] : undefined;
  }

  // --- Feishu markdown: the basics, drawn as DOM ----------------------------------------

  const ENTITY = /&(?:#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6})|(amp|lt|gt|quot|apos|nbsp));/y;
  const NAMED = { amp: "&", lt: "<", gt: ">", quot: "\"", apos: "'", nbsp: "\u00a0" };
  const TAG = /<(\/?)([a-zA-Z_]+)((?:\s+[a-zA-Z_:-]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+))?)*)\s*(\/?)>/y;
  const ATTRIBUTE = /([a-zA-Z_:-]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?/g;
  const LINK = /(!?)\[([^\]\n]*)\]\(([^)\s]*)\)/y;
  const DELIMITERS = [["**", "strong"], ["~~", "del"], ["*", "em"], ["`", "code"]];

  function entity(text, i) {
    ENTITY.lastIndex = i;
    const m = ENTITY.exec(text);
    if (!m) return null;
    if (m[3]) return { char: NAMED[m[3]], length: m[0].length };
    const code = m[1] !== undefined ? parseInt(m[1], 10) : parseInt(m[2], 16);
    const valid = code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff);
    return valid ? { char: String.fromCodePoint(code), length: m[0].length } : null;
  }

  function decode(text) {
    let out = "";
    for (let i = 0; i < text.length;) {
      const e = text[i] === "&" ? entity(text, i) : null;
      if (e) { out += e.char; i += e.length; } else { out += text[i]; i += 1; }
    }
    return out;
  }

  function attributes(source) {
    const out = Object.create(null);
    ATTRIBUTE.lastIndex = 0;
    let m;
    while ((m = ATTRIBUTE.exec(source))) out[m[1].toLowerCase()] = m[2] ?? m[3] ?? m[4] ?? "";
    return out;
  }

  function mention(id, name, parent) {
    const all = id === "all";
    const label = name || (own(state.people, id) ? state.people[id] : all ? "all" : id || "?");
    const chip = el("span", all ? "fs-at fs-at-all" : "fs-at", "@" + label);
    chip.title = all ? "mentions everyone in the chat" : "mentions " + (id || "nobody: no id");
    parent.appendChild(chip);
  }

  // Inline HTML-like tags Feishu markdown knows; any other `<...>` is shown as typed.
  const INLINE_TAGS = {
    at(attrs, inner, parent) {
      const ids = (attrs.id ?? attrs.user_id ?? attrs.ids ?? attrs.open_id ?? attrs.email ?? "").split(",");
      ids.forEach((id) => mention(id.trim(), decode(inner).trim(), parent));
    },
    person(attrs, inner, parent) { mention(attrs.id ?? "", decode(inner).trim(), parent); },
    a(attrs, inner, parent) {
      const a = anchor(decode(attrs.href ?? ""), "fs-link");
      inline(inner, a);
      parent.appendChild(a);
    },
    link(attrs, inner, parent) {
      const a = anchor(decode(attrs.url ?? attrs.pc_url ?? ""), "fs-link");
      inline(inner || attrs.url || "", a);
      parent.appendChild(a);
    },
    font(attrs, inner, parent) {
      const span = el("span");
      const colour = (attrs.color ?? "").toLowerCase();
      if (COLOURS.has(colour)) span.className = "fs-font-" + colour;
      else if (/^(#[0-9a-f]{3,8}|rgba?\([\d\s.,%]+\))$/.test(colour)) span.style.color = colour;
      inline(inner, span);
      parent.appendChild(span);
    },
    text_tag(attrs, inner, parent) {
      const colour = (attrs.color ?? "neutral").toLowerCase();
      const tag = el("span", "fs-tag" + (TAG_COLOURS.has(colour) ? " c-" + colour : ""));
      inline(inner, tag);
      parent.appendChild(tag);
    },
    local_datetime(attrs, inner, parent) {
      const ms = Number(attrs.millisecond ?? attrs.timestamp);
      const shown = Number.isFinite(ms) && ms > 0 ? new Date(ms).toLocaleString() : decode(inner);
      parent.appendChild(el("span", null, shown));
    },
    raw(attrs, inner, parent) { parent.appendChild(document.createTextNode(inner)); },
  };

  function htmlTag(text, i, parent) {
    TAG.lastIndex = i;
    const m = TAG.exec(text);
    if (!m || m[1]) return 0;
    const name = m[2].toLowerCase();
    if (name === "br") { parent.appendChild(el("br")); return m[0].length; }
    if (name === "hr") { parent.appendChild(el("hr", "fs-hr")); return m[0].length; }
    if (!own(INLINE_TAGS, name)) return 0;
    let inner = "";
    let used = m[0].length;
    if (!m[4]) {
      const close = text.toLowerCase().indexOf("</" + name + ">", i + used);
      if (close < 0 && name !== "at" && name !== "person") return 0;
      if (close >= 0) {
        inner = text.slice(i + used, close);
        used = close + name.length + 3 - i;
      }
    }
    INLINE_TAGS[name](attributes(m[3]), inner, parent);
    return used;
  }

  function emphasis(text, i, parent) {
    for (const [mark, tag] of DELIMITERS) {
      if (!text.startsWith(mark, i)) continue;
      const end = text.indexOf(mark, i + mark.length);
      const inner = end > i + mark.length ? text.slice(i + mark.length, end) : "";
      if (!inner || /^\s|\s$/.test(inner)) continue;
      const node = el(tag);
      if (tag === "code") node.textContent = decode(inner);
      else inline(inner, node);
      parent.appendChild(node);
      return end + mark.length - i;
    }
    return 0;
  }

  function markdownLink(text, i, parent) {
    LINK.lastIndex = i;
    const m = LINK.exec(text);
    if (!m) return 0;
    if (m[1]) {
      parent.appendChild(el("span", "fs-tag", "image " + decode(m[3])));
    } else {
      const a = anchor(decode(m[3]), "fs-link");
      inline(m[2], a);
      parent.appendChild(a);
    }
    return m[0].length;
  }

  // One line of markdown: entities and `\x` are literal characters, never syntax.
  function inline(text, parent) {
    let plain = "";
    const flush = () => {
      if (plain) parent.appendChild(document.createTextNode(plain));
      plain = "";
    };
    for (let i = 0; i < text.length;) {
      const c = text[i];
      let used = 0;
      if (c === "&") {
        const e = entity(text, i);
        if (e) { plain += e.char; i += e.length; continue; }
      } else if (c === "\\" && /[!-/:-@[-`{-~]/.test(text[i + 1] ?? "")) {
        plain += text[i + 1];
        i += 2;
        continue;
      } else if (c === "<" || c === "*" || c === "~" || c === "`" || c === "[" || (c === "!" && text[i + 1] === "[")) {
        flush();
        used = c === "<" ? htmlTag(text, i, parent)
          : c === "[" || c === "!" ? markdownLink(text, i, parent) : emphasis(text, i, parent);
      }
      if (used > 0) { i += used; } else { plain += c; i += 1; }
    }
    flush();
  }

  // Block structure: lines, rules, headings, lists, quotes and fenced code.
  function markdown(content, box) {
    let paragraph = null;
    let list = null;
    let code = null;
    const block = (node) => { paragraph = null; list = null; box.appendChild(node); return node; };
    for (const line of String(content ?? "").split(/\r?\n/)) {
      if (code) {
        if (/^\s*```/.test(line)) code = null;
        else code.textContent += (code.textContent ? "\n" : "") + line;
        continue;
      }
      let m;
      if (/^\s*```/.test(line)) {
        const pre = block(el("pre"));
        code = pre.appendChild(el("code"));
      } else if (/^\s*(?:-{3,}|\*{3,}|_{3,})\s*$/.test(line)) {
        block(el("hr"));
      } else if ((m = /^(#{1,6})\s+(.*)$/.exec(line))) {
        inline(m[2], block(el("h" + m[1].length)));
      } else if ((m = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(line))) {
        const kind = /\d/.test(m[1]) ? "ol" : "ul";
        if (!list || list.tagName.toLowerCase() !== kind) list = block(el(kind));
        inline(m[2], list.appendChild(el("li")));
        paragraph = null;
      } else if ((m = /^>\s?(.*)$/.exec(line))) {
        inline(m[1], block(el("blockquote")));
      } else {
        list = null;
        if (paragraph) paragraph.appendChild(el("br"));
        else paragraph = box.appendChild(el("p"));
        inline(line, paragraph);
      }
    }
    return box;
  }

  // --- card components -----------------------------------------------------------------

  function textObject(text, parent, className) {
    if (typeof text === "string") text = { tag: "plain_text", content: text };
    if (!text || typeof text !== "object") return null;
    const content = text.content ?? firstValue(text.i18n) ?? "";
    if (text.tag === "lark_md" || text.tag === "markdown") {
      return parent.appendChild(markdown(content, el("div", "fs-md" + (className ? " " + className : ""))));
    }
    if (text.tag !== undefined && text.tag !== "plain_text") return unsupported(text.tag, parent);
    const span = parent.appendChild(el("div", className || null, content));
    span.style.whiteSpace = "pre-wrap";
    return span;
  }

  function unsupported(tag, parent, what = "element") {
    const shown = typeof tag === "string" ? tag : tag === undefined ? "(no tag)" : JSON.stringify(tag);
    return parent.appendChild(el("div", "fs-unsupported", "unsupported " + what + ": " + shown));
  }

  function elements(list, parent) {
    if (!Array.isArray(list)) {
      unsupported(list === undefined ? "(no elements)" : typeof list, parent, "elements list");
      return;
    }
    list.forEach((item) => component(item, parent));
  }

  function buttonUrl(button) {
    if (typeof button.url === "string") return button.url;
    if (button.multi_url && typeof button.multi_url.url === "string") return button.multi_url.url;
    const open = Array.isArray(button.behaviors) ? button.behaviors.find((b) => b && b.type === "open_url") : null;
    return open ? open.default_url || open.pc_url : null;
  }

  const COMPONENTS = {
    markdown(c, parent) {
      const box = el("div", "fs-md");
      if (c.text_size === "notation") box.classList.add("fs-notation");
      if (c.text_align === "center" || c.text_align === "right") box.classList.add("fs-align-" + c.text_align);
      parent.appendChild(markdown(c.content ?? firstValue(c.i18n_content), box));
    },
    div(c, parent) {
      const box = parent.appendChild(el("div", "fs-div"));
      if (c.text !== undefined) textObject(c.text, box, c.text && c.text.text_size === "notation" ? "fs-notation" : "");
      if (Array.isArray(c.fields)) {
        const grid = box.appendChild(el("div", "fs-fields"));
        c.fields.forEach((field) => {
          const cell = grid.appendChild(el("div", "fs-field" + (field && field.is_short ? " short" : "")));
          textObject(field && field.text, cell);
        });
      }
      if (c.extra !== undefined) component(c.extra, box);
    },
    hr(c, parent) { parent.appendChild(el("hr", "fs-hr")); },
    button(c, parent) {
      const type = BUTTON_TYPES.has(c.type) ? c.type : "default";
      const a = anchor(buttonUrl(c), "fs-button " + type + (c.width === "fill" ? " fill" : ""));
      const label = c.text && typeof c.text === "object" ? c.text.content ?? firstValue(c.text.i18n) : c.text;
      a.textContent = label ?? "";
      parent.appendChild(a);
    },
    action(c, parent) {
      const row = parent.appendChild(el("div", "fs-actions"));
      elements(c.actions, row);
    },
    note(c, parent) {
      const row = parent.appendChild(el("div", "fs-note"));
      (Array.isArray(c.elements) ? c.elements : []).forEach((item) => {
        if (item && item.tag === "img") row.appendChild(el("span", "fs-tag", "image"));
        else if (item && (item.tag === "plain_text" || item.tag === "lark_md")) textObject(item, row);
        else unsupported(item && item.tag, row);
      });
    },
    column_set(c, parent) {
      const row = parent.appendChild(el("div", "fs-columns" + (c.background_style === "grey" ? " grey" : "")));
      (Array.isArray(c.columns) ? c.columns : []).forEach((column) => {
        if (!column || column.tag !== "column") { unsupported(column && column.tag, row); return; }
        const cell = row.appendChild(el("div", "fs-column" + (column.width === "auto" ? " auto" : "")));
        const weight = Number(column.weight);
        if (Number.isFinite(weight) && weight > 0) cell.style.flexGrow = String(weight);
        elements(column.elements ?? [], cell);
      });
    },
    img(c, parent) {
      const alt = c.alt && typeof c.alt === "object" ? c.alt.content : "";
      parent.appendChild(el("div", "fs-img", "image " + (c.img_key ?? "") + (alt ? " · " + alt : "")));
    },
    collapsible_panel(c, parent) {
      const panel = parent.appendChild(el("details", "fs-panel"));
      panel.open = Boolean(c.expanded);
      const summary = panel.appendChild(el("summary"));
      textObject(c.header && c.header.title, summary);
      elements(c.elements ?? [], panel.appendChild(el("div", "fs-panel-body")));
    },
    plain_text(c, parent) { textObject(c, parent); },
    lark_md(c, parent) { textObject(c, parent); },
  };

  function component(c, parent) {
    if (!c || typeof c !== "object" || Array.isArray(c)) return unsupported(Array.isArray(c) ? "(a list)" : typeof c, parent);
    if (!own(COMPONENTS, c.tag)) return unsupported(c.tag, parent);
    return COMPONENTS[c.tag](c, parent);
  }

  function header(h, card) {
    const colour = COLOURS.has(h.template) ? h.template : "default";
    const box = card.appendChild(el("div", "fs-header fs-header-" + colour));
    const title = box.appendChild(el("div", "fs-title"));
    const t = h.title;
    if (t && typeof t === "object" && t.tag === "lark_md") inline(String(t.content ?? ""), title);
    else title.textContent = t && typeof t === "object" ? (t.content ?? firstValue(t.i18n) ?? "") : (t ?? "");
    if (Array.isArray(h.text_tag_list)) {
      const tags = title.appendChild(el("span", "fs-tags"));
      h.text_tag_list.forEach((tag) => tags.appendChild(el("span", "fs-tag", tag && tag.text ? tag.text.content : "")));
    }
    if (h.subtitle && h.subtitle.content) box.appendChild(el("div", "fs-subtitle", h.subtitle.content));
  }

  function drawCard(card, parent) {
    if (!card || typeof card !== "object") return unsupported(typeof card, parent, "card");
    if (card.type === "template") return unsupported("a card-builder template (type template)", parent, "card");
    const box = parent.appendChild(el("div", "fs-card"));
    const config = card.config && typeof card.config === "object" ? card.config : {};
    if (config.width_mode === "compact") box.classList.add("compact");
    if (config.width_mode === "fill") box.classList.add("fill");
    if (card.header && typeof card.header === "object") header(card.header, box);
    const body = box.appendChild(el("div", "fs-body"));
    const v2 = card.schema === "2.0";
    elements(v2 ? (card.body && card.body.elements) : (card.elements ?? firstValue(card.i18n_elements) ?? []), body);
    return box;
  }

  // Text messages are not markdown; only `<at user_id=...>name</at>` means something.
  function drawText(text, parent) {
    const bubble = parent.appendChild(el("div", "fs-text"));
    const AT = /<at\s+([^>]*)>([\s\S]*?)<\/at>/gi;
    let last = 0;
    let m;
    const source = String(text ?? "");
    while ((m = AT.exec(source))) {
      bubble.appendChild(document.createTextNode(source.slice(last, m.index)));
      const attrs = attributes(m[1]);
      mention(attrs.user_id ?? attrs.id ?? "", m[2].trim(), bubble);
      last = AT.lastIndex;
    }
    bubble.appendChild(document.createTextNode(source.slice(last)));
  }

  function drawPost(post, parent) {
    const box = parent.appendChild(el("div", "fs-post"));
    const body = firstValue(post) || {};
    if (body.title) box.appendChild(el("div", "fs-post-title", body.title));
    (Array.isArray(body.content) ? body.content : []).forEach((line) => {
      const p = box.appendChild(el("p"));
      (Array.isArray(line) ? line : []).forEach((node) => {
        const tag = node && node.tag;
        if (tag === "text") p.appendChild(document.createTextNode(node.text ?? ""));
        else if (tag === "a") p.appendChild(anchor(node.href, "fs-link")).textContent = node.text ?? node.href ?? "";
        else if (tag === "at") mention(node.user_id ?? "", node.user_name ?? "", p);
        else if (tag === "img") p.appendChild(el("span", "fs-tag", "image " + (node.image_key ?? "")));
        else unsupported(tag, p);
      });
    });
  }

  function drawMessage(body, botName) {
    const chat = el("div", "chat");
    const sender = chat.appendChild(el("div", "sender"));
    sender.appendChild(el("div", "avatar", (botName || "?").slice(0, 1)));
    const column = sender.appendChild(el("div", "bubble-col"));
    const name = column.appendChild(el("div", "sender-name", botName));
    name.appendChild(el("span", "bot-tag", "Bot"));
    const kind = body && body.msg_type;
    if (kind === "interactive") drawCard(body.card, column);
    else if (kind === "text") drawText(body.content && body.content.text, column);
    else if (kind === "post") drawPost(body.content && body.content.post, column);
    else unsupported(kind, column, "message type");
    return chat;
  }

  // --- JSON and size ---------------------------------------------------------------------

  function drawJson(value, pre) {
    const text = JSON.stringify(value, null, 2);
    const TOKEN = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
    let last = 0;
    let m;
    while ((m = TOKEN.exec(text))) {
      if (m.index > last) pre.appendChild(document.createTextNode(text.slice(last, m.index)));
      const kind = m[1] ? (m[2] ? "k" : "s") : m[3] ? "b" : "n";
      pre.appendChild(el("span", kind, m[1] ?? m[0]));
      if (m[2]) pre.appendChild(document.createTextNode(m[2]));
      last = TOKEN.lastIndex;
    }
    pre.appendChild(document.createTextNode(text.slice(last)));
    return pre;
  }

  const number = (n) => Number(n).toLocaleString("en-US");

  function sizeLine(message, limits) {
    const box = el("div", "size");
    const share = message.bytes / limits.body_bytes;
    if (message.bytes > limits.budget_bytes) box.classList.add("over");
    else if (share > 0.85) box.classList.add("near");
    box.title = limits.app_bot
      ? "An app bot's card as sent: the content string of its request. Feishu refuses a card over " +
        number(limits.body_bytes) + " bytes."
      : "The body as sent, before signing: a signed bot adds up to " + limits.signature_bytes +
        " bytes. Feishu refuses a body over " + number(limits.body_bytes) + " bytes.";
    const bar = box.appendChild(el("span", "bar"));
    bar.appendChild(el("span", "fill")).style.width = Math.min(100, share * 100).toFixed(1) + "%";
    box.appendChild(el("span", "size-text", number(message.bytes) + " bytes · " + Math.round(share * 100) +
      "% of " + Math.round(limits.body_bytes / 1024) + " KB"));
    if (message.body && message.body.msg_type === "interactive") {
      box.appendChild(el("span", "components", message.components + " of " + limits.components + " components"));
    }
    return box;
  }

  function copyButton(pre) {
    const button = el("button", null, "Copy");
    button.type = "button";
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(pre.textContent);
        button.textContent = "Copied";
      } catch (_) {  // no clipboard outside a secure context: select it for Ctrl+C
        const range = document.createRange();
        range.selectNodeContents(pre);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        button.textContent = "Selected";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    });
    return button;
  }

  function drawResult(data) {
    const results = $("results");
    results.replaceChildren();
    results.classList.remove("stale");
    $("error").hidden = true;
    const count = data.messages.length;
    state.people = data.people || {};
    $("summary").textContent = data.alerts + (data.alerts === 1 ? " alert" : " alerts") + " → " + count +
      (count === 1 ? " message" : " messages (split to fit Feishu's limits)") + " for bot " + data.bot +
      ", template " + data.template;
    data.messages.forEach((message, i) => {
      const section = results.appendChild(el("section", "message"));
      const head = section.appendChild(el("div", "message-head"));
      head.appendChild(el("h2", null, "Message " + (i + 1) + " of " + count));
      const body = message.body || {};
      const schema = body.msg_type === "interactive" && body.card ? " · card JSON " + (body.card.schema || "1.0") : "";
      head.appendChild(el("span", "kind", (body.msg_type || "?") + schema));
      head.appendChild(sizeLine(message, data.limits));
      const row = section.appendChild(el("div", "message-body"));
      row.appendChild(drawMessage(body, data.bot));
      const pane = row.appendChild(el("div", "json-pane"));
      const paneHead = pane.appendChild(el("div", "pane-head"));
      paneHead.appendChild(el("span", null, "JSON as sent, before signing"));
      const pre = drawJson(body, el("pre", "json"));
      paneHead.appendChild(copyButton(pre));
      pane.appendChild(pre);
    });
  }

  const KINDS = { template: "Template error", payload: "Payload error", request: "Request error", busy: "Busy" };

  function drawError(data) {
    const box = $("error");
    box.replaceChildren();
    box.appendChild(el("span", "kind", (KINDS[data.kind] || "Error") + ":"));
    box.appendChild(document.createTextNode(data.error || "unknown error"));
    if (data.kind === "template" && data.line && pasting()) {
      const go = box.appendChild(el("button", null, "Show line " + data.line));
      go.type = "button";
      go.addEventListener("click", () => selectLine($("template-text"), data.line));
    }
    box.hidden = false;
    $("results").classList.add("stale");
  }

  function selectLine(area, line) {
    const lines = area.value.split("\n");
    const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
    area.focus();
    area.setSelectionRange(start, start + (lines[line - 1] || "").length);
    area.scrollTop = Math.max(0, (line - 5) * 17);
  }

  // --- the page ------------------------------------------------------------------------

  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      const response = await fetch(path, init);
      let data = null;
      try { data = await response.json(); } catch (_) { /* not JSON: reported below */ }
      return { ok: response.ok, data: data || { error: "HTTP " + response.status, kind: "request" } };
    } catch (e) {
      return { ok: false, data: { error: "the bridge did not answer: " + e.message, kind: "request" } };
    }
  }

  const pasting = () => $("mode-paste").checked;
  const pastedPayload = () => $("sample").value === PASTE;

  function status(text, busy) {
    $("status").textContent = text;
    $("status").classList.toggle("busy", Boolean(busy));
    $("render").disabled = Boolean(busy);
  }

  function currentRequest() {
    const body = { bot: $("bot").value };
    if (pasting()) body.template = $("template-text").value;
    if (pastedPayload()) {
      body.payload = $("payload-text").value;
      body.source = $("source").value;
    } else {
      body.sample = $("sample").value;
    }
    return body;
  }

  // `again`: render even when nothing changed (the Render button), not only on a change.
  async function render(again) {
    clearTimeout(state.timer);
    if (pasting() && !$("template-text").value.trim()) return drawError({ kind: "template", error: "paste a template, or load one to start from" });
    if (pastedPayload() && !$("payload-text").value.trim()) return drawError({ kind: "payload", error: "paste an Alertmanager or Grafana webhook body" });
    const request = currentRequest();
    const key = JSON.stringify(request);
    if (!again && key === state.last) return;  // e.g. a change event that a blur sends late
    state.last = key;
    const seq = ++state.seq;
    status("Rendering…", true);
    const started = performance.now();
    const answer = await api("POST", "/preview/render", request);
    if (seq !== state.seq) return;  // a newer render is on its way
    status(answer.ok ? "Rendered in " + Math.round(performance.now() - started) + " ms" : "", false);
    if (answer.ok) drawResult(answer.data);
    else drawError(answer.data);
  }

  function later() {
    clearTimeout(state.timer);
    if ($("live").checked) state.timer = setTimeout(() => render(false), 600);
  }

  function botChanged() {
    const bot = state.options.bots.find((b) => b.name === $("bot").value);
    $("bot-template").textContent = bot ? bot.template : "";
    if (bot && !pasting()) $("start-from").value = bot.template;
  }

  function modeChanged() {
    $("paste-template").hidden = !pasting();
    $("paste-payload").hidden = !pastedPayload();
    updateTemplateHint();
  }

  function updateTemplateHint() {
    const bytes = new TextEncoder().encode($("template-text").value).length;
    $("template-hint").textContent = number(bytes) + " of " + number(state.options.limits.template_bytes) +
      " bytes. Rendered in the bridge's sandbox, with the selected bot's keywords; never saved.";
  }

  async function loadTemplate() {
    const name = $("start-from").value;
    const answer = await api("GET", "/preview/templates/" + encodeURIComponent(name));
    if (!answer.ok) return drawError(answer.data);
    $("template-text").value = answer.data.source;
    $("mode-paste").checked = true;
    modeChanged();
    render(false);
  }

  function fill(select, items) {
    select.replaceChildren(...items.map(([value, label]) => {
      const option = el("option", null, label);
      option.value = value;
      return option;
    }));
  }

  async function start() {
    const answer = await api("GET", "/preview/options");
    if (!answer.ok) return drawError(answer.data);
    state.options = answer.data;
    const { bots, templates, samples } = answer.data;
    fill($("bot"), bots.map((b) => [b.name, b.name + "  (" + b.template + ")"]));
    fill($("start-from"), templates.map((t) => [t, t]));
    fill($("sample"), samples.map((s) => [s.name, s.name + " — " + s.about.replace(/\.$/, "")])
      .concat([[PASTE, "Paste a webhook body…"]]));
    $("controls").addEventListener("submit", (event) => { event.preventDefault(); render(true); });
    $("controls").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); render(true); }
    });
    $("bot").addEventListener("change", () => { botChanged(); render(false); });
    for (const id of ["mode-bot", "mode-paste", "sample", "source"]) {
      $(id).addEventListener("change", () => { modeChanged(); render(false); });
    }
    $("template-text").addEventListener("input", () => { updateTemplateHint(); later(); });
    $("payload-text").addEventListener("input", later);
    $("load-template").addEventListener("click", loadTemplate);
    botChanged();
    modeChanged();
    render(true);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
