// Kestrel demo store: the cart (in localStorage) and the checkout. It talks to liverec
// only through window.liverec.track, so the store keeps working when liverec is down
// or its script did not load.

const CART_KEY = "kestrel:cart";
const fmt = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });

function track(action, itemId) {
  try {
    if (window.liverec && typeof window.liverec.track === "function") {
      window.liverec.track(action, itemId);
    }
  } catch (e) {
    console.warn("liverec.track failed", e);
  }
}

function load() {
  try { return JSON.parse(localStorage.getItem(CART_KEY) || "[]"); } catch (e) { return []; }
}

function save(lines) {
  try { localStorage.setItem(CART_KEY, JSON.stringify(lines)); } catch (e) { /* private mode */ }
  showCount(lines);
}

function showCount(lines) {
  const n = lines.reduce((sum, l) => sum + l.qty, 0);
  for (const badge of document.querySelectorAll("[data-cart-count]")) {
    badge.textContent = String(n);
    badge.hidden = n === 0;
    badge.parentElement.setAttribute("aria-label", n ? `Cart, ${n} items` : "Cart");
  }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

// --- add to cart (product pages) -------------------------------------------------

document.addEventListener("click", (e) => {
  const button = e.target instanceof Element && e.target.closest("[data-add-to-cart]");
  if (!button) return;
  const id = button.dataset.addToCart;
  const lines = load();
  const line = lines.find((l) => l.id === id);
  if (line) line.qty += 1;
  else lines.push({ id, qty: 1, title: button.dataset.title, price: Number(button.dataset.price),
    image: button.dataset.image });
  save(lines);
  track("add_to_cart", id);
  const status = document.querySelector(".added");
  if (status) {
    status.replaceChildren("Added to your cart · ", el("a", { href: "/demo/cart", text: "View cart" }));
  }
});

// --- the cart page ---------------------------------------------------------------

function subtotal(lines) { return lines.reduce((s, l) => s + l.price * l.qty, 0); }

function summary(lines, withButton) {
  const total = subtotal(lines);
  const shipping = total >= 50 || total === 0 ? 0 : 4.95;
  const box = el("div", { class: "summary" },
    el("div", { class: "row" }, el("span", { text: "Subtotal" }), el("span", { text: fmt.format(total) })),
    el("div", { class: "row" }, el("span", { text: "Shipping" }),
      el("span", { text: shipping ? fmt.format(shipping) : "Free" })),
    el("div", { class: "row total" }, el("span", { text: "Total" }), el("span", { text: fmt.format(total + shipping) })));
  if (withButton) box.append(el("a", { class: "btn btn-wide", href: "/demo/checkout", text: "Checkout" }));
  return box;
}

function renderCart(root) {
  const lines = load();
  if (!lines.length) {
    root.replaceChildren(el("div", { class: "empty empty-cart" },
      el("h2", { text: "Your cart is empty" }),
      el("p", { class: "muted", text: "Find something you like: the picks below follow your browsing." }),
      el("a", { class: "btn", href: "/demo", text: "Start shopping" })));
    return;
  }
  const list = el("ul", { class: "lines", role: "list" });
  for (const l of lines) {
    const minus = el("button", { type: "button", "aria-label": `One fewer ${l.title}`, text: "−" });
    const plus = el("button", { type: "button", "aria-label": `One more ${l.title}`, text: "+" });
    const remove = el("button", { type: "button", class: "remove", text: "Remove" });
    minus.onclick = () => change(l.id, -1);
    plus.onclick = () => change(l.id, +1);
    remove.onclick = () => change(l.id, -l.qty);
    list.append(el("li", { class: "line" },
      el("img", { src: l.image, alt: "", width: "84", height: "84" }),
      el("div", {},
        el("a", { class: "line-title", href: `/demo/p/${encodeURIComponent(l.id)}`, "data-liverec-item": l.id, text: l.title }),
        el("div", { class: "line-price", text: fmt.format(l.price) }),
        el("div", { class: "qty" }, minus, el("span", { "aria-live": "polite", text: String(l.qty) }), plus, remove)),
      el("div", { class: "line-total", text: fmt.format(l.price * l.qty) })));
  }
  root.replaceChildren(list, summary(lines, true));

  function change(id, delta) {
    const all = load();
    const line = all.find((x) => x.id === id);
    if (!line) return;
    line.qty += delta;
    track(delta > 0 ? "add_to_cart" : "remove_from_cart", id);
    save(all.filter((x) => x.qty > 0));
    renderCart(root);
  }
}

// --- checkout -------------------------------------------------------------------

function setupCheckout(root) {
  const form = root.querySelector("[data-checkout-form]");
  const box = root.querySelector("[data-summary]");
  const lines = load();
  if (!lines.length) {
    form.hidden = true;
    root.replaceChildren(el("div", { class: "empty" }, el("h2", { text: "Nothing to check out yet" }),
      el("a", { class: "btn", href: "/demo", text: "Start shopping" })));
    return;
  }
  box.replaceWith(summary(lines, false));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const bought = load();
    track("purchase", bought.map((l) => l.id));
    save([]);
    const done = root.querySelector("[data-done]");
    done.querySelector("[data-order]").textContent = "KS-" + Math.floor(100000 + Math.random() * 900000);
    for (const child of [...root.children]) if (child !== done) child.remove();
    done.hidden = false;
    done.focus();
  });
}

showCount(load());
const cartRoot = document.querySelector("[data-cart]");
if (cartRoot) renderCart(cartRoot);
const checkoutRoot = document.querySelector("[data-checkout]");
if (checkoutRoot) setupCheckout(checkoutRoot);
